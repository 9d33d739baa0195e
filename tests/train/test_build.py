"""Specification of the trainer's data-free phases: they size the model and schedule from two numbers,
lay the state out on the mesh, and import no TensorFlow (GPU hosts, benchmarks and the planner)."""
import subprocess
import sys

import jax
import jax.numpy as jnp

from vit_jax.configuration import base_config
from vit_jax.train import build


def tiny_config():
  config = base_config()
  config.model_name = "ViT-micro/4"
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


def test_init_fn_builds_the_state_setup_describes():
  config = tiny_config()
  setup = build.setup(config, num_classes=7, train_examples=640)
  init = build.init_fn(setup.model, setup.tx, config.data.image_size, config.seed)
  state = jax.jit(lambda: init(boxed=False), out_shardings=setup.state_shardings)()
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
