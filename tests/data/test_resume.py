"""Specification of resumption: the data position saved in an Orbax checkpoint restores the stream."""
import itertools

import jax.numpy as jnp
import numpy as np

from vit_jax import configuration
from vit_jax import checkpoint
from vit_jax.data import pipeline, sources


def _stream(config, source, start, count):
  return list(itertools.islice(pipeline.train_batches(
      config, source=source, batch_size=8, image_size=8, seed=7, start_step=start), count))


def test_a_run_restored_at_step_k_sees_the_batches_the_uninterrupted_run_saw(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (44, 10, 10, 3), np.uint8)
  source = sources.ArraySource("random", images, np.arange(44) % 5, 5,
                               {"train": np.arange(44)})  # 5 steps per epoch, 4 dropped.
  config = configuration.data_config()
  config.update(pp_train="decode|inception_crop(8)|flip_lr|value_range|onehot",
                pp_batch="mixup(0.8)|cutmix(1.0)")  # Random ops per example and per batch.
  uninterrupted = _stream(config, source, 0, 12)

  for k in (3, 5, 7):  # Mid-epoch, at an epoch boundary, in the second epoch.
    directory = tmp_path / f"run_{k}"
    with checkpoint.Checkpointer(directory, save_every=1, async_save=False) as ckpt:
      state = {"step": jnp.asarray(k, jnp.int32), "params": jnp.zeros(3)}
      ckpt.save(k, state, {"data_position": k}, force=True)  # As the trainer saves after step k.
    with checkpoint.Checkpointer(directory) as ckpt:  # A new process, say.
      restored_state, extra = ckpt.restore()
    assert int(restored_state["step"]) == extra["data_position"] == k
    resumed = _stream(config, source, extra["data_position"], 12 - k)
    for a, b in zip(resumed, uninterrupted[k:], strict=True):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
