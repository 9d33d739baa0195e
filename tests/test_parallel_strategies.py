"""Specification of the sharding strategies on 8 fake devices: same numbers as one device, memory split."""
import math

import jax
import numpy as np
import pytest

from vit_jax.configuration import base_config
from vit_jax.models import attention_dispatch, create_model
from vit_jax.train import build

# Its module-scoped runs are shared by its tests: pytest-xdist keeps this file on one worker.
pytestmark = pytest.mark.xdist_group("test_parallel_strategies")

STRATEGIES = {
    "fsdp": dict(data=2, fsdp=4, tensor=1),
    "fsdp_tensor": dict(data=2, fsdp=2, tensor=2),
}


def config_for(strategy, mesh, **train):
  config = base_config("ViT-micro/4")
  config.data.image_size = 16
  config.batch_size = 16
  config.train.steps = 5
  config.train.update(train)
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 1
  config.sharding = strategy
  config.fsdp_min_size = 0  # shard every tensor of this tiny model
  config.mesh.update(mesh)
  return config


@pytest.fixture(scope="module")
def losses(train_losses):
  """losses(strategy, **train): the 5 losses of config_for(strategy, its mesh, **train), each run
  once for the module; strategy None: the same model on one device."""
  import vit_jax.parallel as parallel  # pylint: disable=import-outside-toplevel
  runs = {}

  def run(strategy, attention_impl=None, **train):
    key = (strategy, attention_impl, tuple(sorted(train.items())))
    if key not in runs:
      config = config_for(strategy or "data_parallel", STRATEGIES.get(strategy, {"data": 1}),
                          **train)
      if attention_impl:
        config.model.attention_impl = attention_impl
      with pytest.MonkeyPatch.context() as patch:
        if strategy is None:
          original = parallel.make_mesh
          patch.setattr(parallel, "make_mesh",
                        lambda sizes: original({"data": 1}, jax.devices()[:1]))
        runs[key] = train_losses(config, steps=5)
    return runs[key]

  return run


# Data parallelism on 8 devices against one is tests/train/test_step.py's (three steps).
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_tensor"])
def test_five_steps_match_one_device(strategy, losses):
  np.testing.assert_allclose(losses(strategy), losses(None), atol=1e-5)


def test_the_cpu_attention_kernel_trains_like_xla_attention_under_fsdp_and_tensor(losses):
  """The C++ kernel runs per shard of the batch and heads axes (vit_jax/kernels/cpu_attention.py);
  it is what losses() runs by default ('auto' on a CPU host)."""
  assert create_model("ViT-micro/4").attention_impl == "auto"
  assert attention_dispatch.choose("auto", jax.default_backend(), 17, dropout_active=False) == "cpu"
  np.testing.assert_allclose(losses("fsdp_tensor"), losses("fsdp_tensor", attention_impl="xla"),
                             atol=1e-5)


def test_gradient_accumulation_works_with_parameters_sharded_over_fsdp_and_tensor(losses):
  np.testing.assert_allclose(losses("fsdp_tensor", accum_steps=2), losses("fsdp_tensor"), atol=1e-5)


def per_device_bytes(abstract, shardings):
  return sum(math.prod(s.shard_shape(leaf.shape)) * leaf.dtype.itemsize
             for leaf, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))


def total_bytes(abstract):
  return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))


@pytest.mark.parametrize("strategy, mesh, shards", [
    ("fsdp", dict(data=1, fsdp=8, tensor=1), 8),
    ("fsdp", dict(data=2, fsdp=4, tensor=1), 4),
    ("fsdp_tensor", dict(data=2, fsdp=2, tensor=2), 4),
    ("fsdp_tensor", dict(data=1, fsdp=4, tensor=2), 8),
])
def test_vit_b16_params_and_optimizer_state_are_split_over_the_shards(strategy, mesh, shards):
  """Per-device bytes of params + Adam state within 10% of total / shards (abstract shapes only)."""
  config = config_for(strategy, mesh)
  config.model_name, config.data.image_size = "ViT-B/16", 224
  config.fsdp_min_size = base_config().fsdp_min_size
  setup = build.setup(config, num_classes=10, train_examples=1000)
  state = (setup.abstract_state.params, setup.abstract_state.opt_state)
  shardings = (setup.state_shardings.params, setup.state_shardings.opt_state)
  ratio = per_device_bytes(state, shardings) / (total_bytes(state) / shards)
  assert 0.9 <= ratio <= 1.1, ratio


def test_fsdp_fails_with_a_list_when_a_large_tensor_stays_replicated():
  config = config_for("fsdp", dict(data=1, fsdp=8, tensor=1))
  config.model_name, config.data.image_size = "ViT-testing", 16  # hidden 10: not divisible by 8
  config.fsdp_check_size = 100  # the 10x10 MLP kernels count as large here
  with pytest.raises(ValueError, match=r"replicated on every device:\n  .*kernel"):
    build.setup(config, num_classes=10, train_examples=1000)
