"""Specification of the train step: loss falls, sharding does not change the numbers, accumulation is exact."""
import jax
import numpy as np

from vit_jax import parallel
from vit_jax.configuration import base_config
from vit_jax.train import build


def tiny_config(**mesh):
  config = base_config("ViT-micro/4")
  config.data.image_size = 16
  config.batch_size = 16
  config.train.steps = 20
  config.optim.learning_rate = 3e-3
  config.optim.weight_decay = 0.01
  config.mesh.update(mesh)
  return config


def batches(count, batch_size=16, seed=0):
  """Learnable synthetic data: the label is the brightest of 10 horizontal bands."""
  rng = np.random.RandomState(seed)
  for _ in range(count):
    labels = rng.randint(0, 10, batch_size).astype(np.int32)
    images = rng.uniform(-1, 0, (batch_size, 16, 16, 3)).astype(np.float32)
    for i, label in enumerate(labels):
      images[i, label:label + 6] += 1.0
    yield {"image": images, "label": labels}


def run(config, steps, devices=None, accum_steps=1):
  """Trains `steps` steps on a mesh over `devices`; returns per-step losses and final params."""
  config.train.accum_steps = accum_steps
  if devices is not None:
    config.mesh.data = len(devices)
  setup = build.setup(config, 10, 640) if devices is None else None
  if devices is not None:
    original = parallel.make_mesh
    try:
      parallel.make_mesh = lambda sizes: original(sizes, devices)
      setup = build.setup(config, 10, 640)
    finally:
      parallel.make_mesh = original
  losses = []
  state = setup.init_state()
  with parallel.activate(setup.mesh, setup.rules):
    for batch in batches(steps):
      state, metrics = setup.train_step(state, parallel.global_batch(batch, setup.mesh, setup.rules))
      losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params)


def assert_params_close(a, b, steps=3, learning_rate=3e-3):
  """Adam normalises each coordinate, so reduction-order rounding in near-zero gradients can move a
  weight by a small fraction of the learning rate (3e-3); 1e-4 still catches any real difference.
  The key biases are held to Adam's largest possible move instead: softmax is invariant to them
  (q.(k + b) shifts a whole row of logits), so their gradient is rounding noise alone, which Adam
  scales to steps near the learning rate (5e-5 apart with XLA's attention, 1e-4 with the CPU kernel)."""
  def close(path, x, y):
    key_bias = [entry.key for entry in path[-2:]] == ["key", "bias"]
    np.testing.assert_allclose(x, y, atol=2 * steps * learning_rate if key_bias else 1e-4,
                               err_msg=jax.tree_util.keystr(path))
  jax.tree_util.tree_map_with_path(close, a, b)


def test_loss_falls_on_learnable_data():
  losses, _ = run(tiny_config(), 20)
  assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])


def test_eight_devices_match_one_device_after_three_steps():
  assert len(jax.devices()) == 8
  one, params_one = run(tiny_config(), 3, devices=jax.devices()[:1])
  eight, params_eight = run(tiny_config(), 3, devices=jax.devices())
  np.testing.assert_allclose(one, eight, atol=1e-5)
  assert_params_close(params_one, params_eight)


def test_gradient_accumulation_equals_the_full_batch():
  full, params_full = run(tiny_config(), 3, devices=jax.devices()[:1])
  micro, params_micro = run(tiny_config(), 3, devices=jax.devices()[:1], accum_steps=4)
  np.testing.assert_allclose(full, micro, atol=1e-5)
  assert_params_close(params_full, params_micro)


def test_fsdp_and_tensor_rules_shard_the_parameters():
  """Their numbers (five steps against one device) are tests/test_parallel_strategies.py's."""
  config = tiny_config(data=2, fsdp=2, tensor=2)
  config.sharding = "fsdp_tensor"
  config.fsdp_min_size = 0  # shard even this tiny model's kernels
  setup = build.setup(config, 10, 640)
  kernel = setup.state_shardings.params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]
  assert tuple(kernel["kernel"].spec) == ("fsdp", "tensor")
