"""Specification of the trainer's data-free phases: they size the model and schedule from two numbers,
lay the state out on the mesh, and import no TensorFlow (GPU hosts, benchmarks and the planner)."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import parallel
from vit_jax.configuration import base_config
from vit_jax.train import build

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def tiny_config():
  config = base_config("ViT-micro/4")
  config.data.image_size = 16
  config.batch_size = 16
  config.train.epochs = 2
  config.mesh.data = 8
  return config


def test_setup_takes_the_class_count_and_the_train_split_size():
  setup = build.setup(tiny_config(), num_classes=7, train_examples=640)
  assert setup.num_classes == 7
  assert setup.total_steps == 2 * 640 // 16
  assert setup.abstract_state.params["head"]["kernel"].shape[-1] == 7


def test_init_state_builds_the_state_setup_describes():
  setup = build.setup(tiny_config(), num_classes=7, train_examples=640)
  state = setup.init_state()
  same_shapes = jax.tree.map(lambda real, abstract: real.shape == abstract.shape and
                             real.dtype == abstract.dtype and real.sharding == abstract.sharding,
                             state, setup.abstract_state)
  assert all(jax.tree.leaves(same_shapes))
  assert state.params["head"]["kernel"].dtype == jnp.float32


def test_the_step_is_assembled_without_tensorflow():
  modules = ["vit_jax.train.build", "vit_jax.train.step", "vit_jax.configuration", "vit_jax.flops",
             "vit_jax.plan"]
  code = (f"import sys\nimport {', '.join(modules)}\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  assert result.stdout.strip() == "[]", result.stdout


def test_setup_owns_the_step_options_and_resolves_the_loss():
  config = tiny_config()
  assert build.setup(config, 7, 640).loss_name == "softmax_xent"
  assert build.setup(config, 7, 640, multi_label=True).loss_name == "sigmoid_xent"
  config.loss = "sigmoid_xent"
  assert build.setup(config, 7, 640).loss_name == "sigmoid_xent"
  config.loss = "hinge"
  with pytest.raises(ValueError, match="config.loss='hinge'"):
    build.setup(config, 7, 640)


@pytest.mark.parametrize("batch_size", [0, -16, 12])
def test_a_batch_that_cannot_be_split_over_the_mesh_is_rejected_before_building(batch_size):
  config = tiny_config()
  config.batch_size = batch_size
  with pytest.raises(ValueError, match=f"batch_size {batch_size} "):
    build.setup(config, 7, 640)


def test_the_eval_step_compiles_once_for_every_pass():
  """Setup jits its steps once; passes over padded batches of one shape reuse the executable."""
  setup = build.setup(tiny_config(), num_classes=7, train_examples=640)
  state = setup.init_state()
  variables = {"params": state.params}
  batch = {"image": np.zeros((16, 16, 16, 3), np.float32), "label": np.zeros((16,), np.int32),
           "mask": np.ones((16,), np.float32)}
  compiles = []
  listener = lambda event, duration, **kw: compiles.append(event) if event == BACKEND_COMPILE else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    with parallel.activate(setup.mesh, setup.rules):
      for _ in range(3):
        for _ in range(2):  # two batches per pass
          jax.block_until_ready(setup.eval_step(
              variables, parallel.global_batch(batch, setup.mesh, setup.rules)))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert len(compiles) == 1


def lvvit_token_label_config(**loss_options):
  config = base_config("LV-ViT-test")
  config.data.image_size = 32
  config.batch_size = 8
  config.train.steps = 2
  config.train.label_smoothing = 0.1
  config.loss = "token_label"
  config.loss_options.update(loss_options)
  return config


def vit_token_label_config(**loss_options):
  """ViT-micro/4 at 32 px (8x8 tokens) with a per-token head: token labeling is not LV-ViT's alone."""
  config = lvvit_token_label_config(**loss_options)
  config.model_name, config.model = "ViT-micro/4", base_config("ViT-micro/4").model
  config.model.token_head = True
  return config


def test_a_dense_loss_trains_the_model_on_its_dense_outputs_and_evaluates_its_logits():
  """config.loss='token_label': the step's loss is the registered loss of the model's DenseOutput
  and the batch's score maps; evaluation scores the plain logits. (LV-ViT-test; a ViT's token head
  gives the same DenseOutput, tests/models/test_vit.py, and Setup accepts it, below.)"""
  from vit_jax.train import token_labeling as tl  # pylint: disable=import-outside-toplevel
  config = lvvit_token_label_config(dense_weight=0.7)
  setup = build.setup(config, num_classes=10, train_examples=16)
  rng = np.random.RandomState(0)
  batch = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
           "label": rng.randint(0, 10, 8).astype(np.int32),
           tl.SCORE_VALUES: rng.normal(size=(8, 5, 6, 6)).astype(np.float32),
           tl.SCORE_INDICES: rng.randint(0, 10, (8, 5, 6, 6)).astype(np.int32),
           tl.CROP: np.tile(np.float32([0.1, 0.2, 0.5, 0.6]), (8, 1))}
  state = setup.init_state()
  params = dict(state.params)
  for name in ("head", "aux_head"):  # ViT's heads start at zero: give both something to read
    kernel = params[name]["kernel"]
    params[name] = {**params[name], "kernel": jax.device_put(
        rng.normal(size=kernel.shape).astype(np.float32), kernel.sharding)}
  state = state.replace(params=params)
  variables = jax.device_get({"params": state.params, **state.model_state})
  dense_model = setup.model.clone(return_dense=True)
  output, _ = dense_model.apply(variables, batch["image"], train=True, mutable=True,
                                rngs={"dropout": jax.random.key(0)})  # No dropout, no MixToken.
  expected = np.mean(tl.token_label_loss(output, batch, label_smoothing=0.1, dense_weight=0.7))
  with parallel.activate(setup.mesh, setup.rules):
    _, metrics = setup.train_step(state, parallel.global_batch(batch, setup.mesh, setup.rules))
    sums = setup.eval_step(variables, parallel.global_batch(
        {"image": batch["image"], "label": batch["label"], "mask": np.ones(8, np.float32)},
        setup.mesh, setup.rules))
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
  logits = setup.model.apply(variables, batch["image"])
  np.testing.assert_allclose(sums["loss_sum"], np.sum(
      -jax.nn.log_softmax(logits)[np.arange(8), batch["label"]]), rtol=1e-5)


def test_a_vit_with_a_token_head_is_accepted_for_a_dense_loss():
  setup = build.setup(vit_token_label_config(), num_classes=10, train_examples=16)
  assert "aux_head" in setup.abstract_state.params


def test_a_dense_loss_for_a_model_without_dense_outputs_is_an_error_naming_both():
  config = tiny_config()
  config.loss = "token_label"
  with pytest.raises(ValueError, match=r"config.loss='token_label' trains on per-token outputs, "
                                       r"which ViT-micro/4 does not have.*token_head=True"):
    build.setup(config, num_classes=10, train_examples=640)


def test_score_maps_without_a_loss_that_reads_them_are_an_error():
  config = tiny_config()
  config.data.score_maps = "maps/teacher"
  with pytest.raises(ValueError, match=r"data.score_maps is set, but config.loss='softmax_xent' does not "
                                       r"read score maps"):
    build.setup(config, num_classes=10, train_examples=640)


def test_a_loss_option_the_loss_does_not_take_is_an_error_naming_it():
  with pytest.raises(ValueError, match=r"config.loss_options.dense_wieght: loss 'token_label' takes "
                                       r"no such option; it takes dense_weight, cls_weight"):
    build.setup(lvvit_token_label_config(dense_wieght=0.5), num_classes=10, train_examples=16)
