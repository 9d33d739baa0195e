"""Specification of batching: a deterministic, resumable, sharded train stream; a masked eval."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources


class IndexedSource(sources.Source):
  """n random 8x8 images; example i is labelled i, so labels identify examples."""

  def __init__(self, n, size=8):
    self.num_classes = n
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (n, size, size, 3), np.uint8)

  def num_examples(self, split):
    return len(self.images)

  def read(self, split, shard_index=0, shard_count=1):
    labels = np.arange(len(self.images), dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices({"image": self.images, "label": labels})
    return ds.shard(shard_count, shard_index)


CONFIG = sources.default_data_config()
PLAIN = pipeline.default_augment_config()  # Identity augmentation: labels and pixels pass through.
PLAIN.update(crop="resize", flip=False)


def _train(source, n_batches, **kwargs):
  kwargs = {"batch_size": 8, "image_size": 8, "seed": 0, "augment": PLAIN, **kwargs}
  return list(itertools.islice(pipeline.train_batches(CONFIG, source=source, **kwargs), n_batches))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_train_batches_from_digits_config_have_the_promised_shapes_and_range():
  batches = _train(None, 2, batch_size=16, image_size=12, augment=pipeline.default_augment_config())
  for batch in batches:
    assert batch["image"].shape == (16, 12, 12, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_plain_augmentation_passes_pixels_through_value_range():
  source = IndexedSource(16)
  (batch,) = _train(source, 1)
  expected = source.images[batch["label"]].astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(batch["image"], expected, atol=1e-6)


def test_each_epoch_is_a_fresh_permutation_dropping_the_remainder():
  batches = _train(IndexedSource(20), 4)  # 2 full batches of 8 per epoch; 4 examples dropped.
  epochs = [np.concatenate([b["label"] for b in batches[i:i + 2]]) for i in (0, 2)]
  for labels in epochs:
    assert len(set(labels.tolist())) == 16
  assert epochs[0].tolist() != epochs[1].tolist()


def test_train_stream_is_a_function_of_the_seed():
  source = IndexedSource(24)
  augment = pipeline.default_augment_config()
  _assert_same_batches(_train(source, 5, augment=augment), _train(source, 5, augment=augment))
  other = _train(source, 5, augment=augment, seed=1)
  assert not np.array_equal(other[0]["label"], _train(source, 1, augment=augment)[0]["label"])


def test_resuming_at_step_k_yields_batches_k_onwards_of_the_uninterrupted_stream():
  source = IndexedSource(24)  # 3 steps per epoch: step 4 is in the middle of epoch 1.
  augment = pipeline.default_augment_config()
  fresh = _train(source, 9, augment=augment)
  for k in (1, 3, 4):
    _assert_same_batches(_train(source, 9 - k, augment=augment, start_step=k), fresh[k:])


def test_two_processes_read_disjoint_halves_covering_the_epoch():
  source = IndexedSource(32)  # 2 steps per epoch of 16 global examples.
  per_process = [_train(source, 2, batch_size=16, process_index=i, process_count=2)
                 for i in range(2)]
  for batches in per_process:
    assert all(b["image"].shape[0] == 8 for b in batches)
  labels = [set(np.concatenate([b["label"] for b in batches]).tolist()) for batches in per_process]
  assert not labels[0] & labels[1]
  assert labels[0] | labels[1] == set(range(32))


def test_augmentation_of_an_example_does_not_depend_on_the_process_count():
  source = IndexedSource(32)  # One epoch: 2 global batches of 16.
  augment = pipeline.default_augment_config()
  by_label = {}
  for count in (1, 2):
    for index in range(count):
      for batch in _train(source, 2, batch_size=16, augment=augment,
                          process_index=index, process_count=count):
        for image, label in zip(batch["image"], batch["label"]):
          by_label.setdefault(int(label), []).append(image)
  assert sorted(by_label) == list(range(32))
  for images in by_label.values():
    assert len(images) == 2
    np.testing.assert_array_equal(images[0], images[1])


def test_train_batches_reject_bad_batch_sizes():
  with pytest.raises(ValueError, match="multiple of process_count=3"):
    _train(IndexedSource(32), 1, batch_size=16, process_count=3)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    _train(IndexedSource(7), 1)


def _real_labels(batches):
  return [int(l) for b in batches for l, m in zip(b["label"], b["mask"]) if m == 1.0]


def test_eval_covers_every_example_once_and_masks_the_padding():
  source = IndexedSource(37)
  batches = list(pipeline.eval_batches(CONFIG, source=source, split="test", batch_size=8,
                                       image_size=8))
  assert len(batches) == pipeline.eval_steps(37, 8) == 5
  for batch in batches:
    assert batch["image"].shape == (8, 8, 8, 3) and batch["mask"].dtype == np.float32
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), [1] * 37 + [0] * 3)
  assert _real_labels(batches) == list(range(37))
  expected = preprocess.value_range(preprocess.resize(source.images[5], 8)).numpy()
  np.testing.assert_array_equal(batches[0]["image"][5], expected)


def test_eval_over_two_processes_gives_equal_batch_counts_and_every_example_once():
  source = IndexedSource(37)
  per_process = [list(pipeline.eval_batches(CONFIG, source=source, split="test", batch_size=8,
                                            image_size=6, process_index=i, process_count=2))
                 for i in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == pipeline.eval_steps(37, 8, 2) == 5
  assert all(b["image"].shape == (4, 6, 6, 3) for bs in per_process for b in bs)
  assert sorted(_real_labels(per_process[0]) + _real_labels(per_process[1])) == list(range(37))
