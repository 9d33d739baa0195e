"""Stand-ins for the export tests: a run's checkpoint and config without training, from shapes only."""
import json

import flax.traverse_util
import jax
import numpy as np
import optax

from vit_jax import configuration
from vit_jax.checkpoint import Checkpointer, checkpoint_directory
from vit_jax.convert.core import expected_leaves
from vit_jax.export.trained import Trained
from vit_jax.models import create_model
from vit_jax.train.state import TrainState


def random_variables(model, seed: int = 0) -> dict:
  """Every variable of `model` with values far from its init (a zero head would hide layout errors):
  kernels normal / sqrt(fan-in), scales near 1, small biases, variances above 0, tables of scale 0.5."""
  rng = np.random.default_rng(seed)

  def value(path, shape):
    noise = rng.normal(size=shape)
    if path.endswith("/kernel"):
      return noise / np.sqrt(np.prod(shape[:-1]))
    if path.endswith("/scale"):
      return 1.0 + 0.2 * noise
    if path.endswith("/bias") or path.endswith("/mean"):
      return 0.1 * noise
    if path.endswith("/var"):
      return 1.0 + 0.2 * np.abs(noise)
    return 0.5 * noise
  return flax.traverse_util.unflatten_dict(
      {path: value(path, spec.shape).astype(np.float32)
       for path, spec in expected_leaves(model).items()}, sep="/")


def run_config(model_name: str = "ViT-testing", image_size: int = 32, **model_fields):
  """A run's config for `model_name` at `image_size` on the digits (the default job's data)."""
  config = configuration.base_config(model_name)
  configuration.small_digits_job(config, image_size)
  config.data.image_size = image_size
  for key, value in model_fields.items():
    config.model[key] = value
  return config


def trained(model_name: str = "ViT-testing", image_size: int = 32, num_classes: int = 10,
            **model_fields) -> Trained:
  """A Trained of random variables with its run config, as if restored from a run's workdir."""
  config = run_config(model_name, image_size, **model_fields)
  model = create_model(model_name, num_classes=num_classes, image_size=image_size, **model_fields)
  return Trained("random", random_variables(model), None, config)


def write_run(workdir, model_name: str = "ViT-testing", image_size: int = 32, num_classes: int = 10,
              step: int = 4, seed: int = 0):
  """A finished run's workdir without training: config.json (as the trainer writes it), a checkpoint
  of random variables at `step` and its metrics.jsonl. Returns the variables."""
  config = run_config(model_name, image_size)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  model = create_model(model_name, num_classes=num_classes, image_size=image_size)
  variables = random_variables(model, seed)
  params = variables["params"]
  state = TrainState(step=np.int32(step), params=params, opt_state=optax.sgd(0.1).init(params),
                     rng=jax.random.key_data(jax.random.key(seed)))
  with Checkpointer(checkpoint_directory(workdir)) as ckpt:
    ckpt.save(step, jax.device_put(state), {"data_position": step})
  rows = [{"step": 2, "loss": 2.3}, {"step": 2, "test_accuracy": 0.25, "test_loss": 2.2},
          {"step": step, "loss": 1.9}, {"step": step, "test_accuracy": 0.5, "test_loss": 1.5}]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
  return variables


def assert_trees_equal(got: dict, want: dict) -> None:
  flat_got, flat_want = (flax.traverse_util.flatten_dict(t, sep="/") for t in (got, want))
  assert sorted(flat_got) == sorted(flat_want)
  for path, value in flat_want.items():
    np.testing.assert_array_equal(flat_got[path], value, err_msg=path)


def flat(tree: dict) -> dict:
  return flax.traverse_util.flatten_dict(tree, sep="/")
