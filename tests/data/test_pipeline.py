"""Specification of batching: a deterministic, resumable, sharded train stream; a masked eval."""
import itertools
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from vit_jax import configuration
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources


def IndexedSource(n, size=8):  # pylint: disable=invalid-name
  """n random images; example i is labelled i, so labels identify examples (both splits)."""
  images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), np.uint8)
  return sources.ArraySource("indexed", images, np.arange(n), n,
                             {"train": np.arange(n), "test": np.arange(n)})


CONFIG = configuration.data_config()
PLAIN = configuration.data_config().augment  # Identity augmentation: labels and pixels pass through.
PLAIN.update(crop="resize", flip=False)


GLOBAL_ORDER = configuration.data_config()
GLOBAL_ORDER.global_order = True
WHOLE_BATCH_GLOBAL_ORDER = configuration.data_config()  # Whole-batch ops draw for global rows.
WHOLE_BATCH_GLOBAL_ORDER.update(global_order=True, pp_train="decode",
                                pp_batch="inception_crop(8, area_min=0.5)|flip_lr|value_range")


def _train(source, n_batches, config=CONFIG, **kwargs):
  kwargs = {"batch_size": 8, "image_size": 8, "seed": 0, "augment": PLAIN, **kwargs}
  return list(itertools.islice(pipeline.train_batches(config, source=source, **kwargs), n_batches))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_train_batches_from_digits_config_have_the_promised_shapes_and_range():
  batches = _train(None, 2, batch_size=16, image_size=12, augment=configuration.data_config().augment)
  for batch in batches:
    assert batch["image"].shape == (16, 12, 12, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_plain_augmentation_passes_pixels_through_value_range():
  source = IndexedSource(16)
  (batch,) = _train(source, 1)
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), np.uint8)  # As IndexedSource.
  expected = images[batch["label"]].astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(batch["image"], expected, atol=1e-6)


def test_each_epoch_is_a_fresh_permutation_dropping_the_remainder():
  batches = _train(IndexedSource(20), 4)  # 2 full batches of 8 per epoch; 4 examples dropped.
  epochs = [np.concatenate([b["label"] for b in batches[i:i + 2]]) for i in (0, 2)]
  for labels in epochs:
    assert len(set(labels.tolist())) == 16
  assert epochs[0].tolist() != epochs[1].tolist()


def test_train_stream_is_a_function_of_the_seed():
  source = IndexedSource(24)
  augment = configuration.data_config().augment
  _assert_same_batches(_train(source, 5, augment=augment), _train(source, 5, augment=augment))
  other = _train(source, 5, augment=augment, seed=1)
  assert not np.array_equal(other[0]["label"], _train(source, 1, augment=augment)[0]["label"])


def test_resuming_at_step_k_yields_batches_k_onwards_of_the_uninterrupted_stream():
  source = IndexedSource(24)  # 3 steps per epoch: step 4 is in the middle of epoch 1.
  augment = configuration.data_config().augment
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
  augment = configuration.data_config().augment
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


def _side_by_side(per_process):
  """The global batches that the processes' local batches make, step by step."""
  return [{key: np.concatenate([step[i][key] for i in range(len(step))])
           for key in step[0]} for step in zip(*per_process)]


@pytest.mark.parametrize("config", [GLOBAL_ORDER, WHOLE_BATCH_GLOBAL_ORDER])
@pytest.mark.parametrize("start_step", [0, 3])
def test_in_global_order_the_global_batches_do_not_depend_on_the_process_count(start_step, config):
  source = IndexedSource(40)  # 2 global batches of 16 per epoch (8 dropped): 5 steps cross 2 epochs.
  run = dict(batch_size=16, augment=configuration.data_config().augment, start_step=start_step)
  one = _train(source, 5, config, **run)
  if config is GLOBAL_ORDER:
    _assert_same_batches(one, _train(source, 5, **run))  # One process: the default stream.
  for count in (2, 4):
    per_process = [_train(source, 5, config, process_index=i, process_count=count, **run)
                   for i in range(count)]
    assert all(b["image"].shape[0] == 16 // count for batches in per_process for b in batches)
    _assert_same_batches(_side_by_side(per_process), one)


def test_in_global_order_resuming_at_step_k_continues_every_process_slice():
  source = IndexedSource(40)
  run = dict(batch_size=16, augment=configuration.data_config().augment, process_count=2)
  for index in range(2):
    fresh = _train(source, 6, GLOBAL_ORDER, process_index=index, **run)
    for k in (1, 2, 5):
      _assert_same_batches(
          _train(source, 6 - k, GLOBAL_ORDER, process_index=index, start_step=k, **run), fresh[k:])


def test_a_source_must_tag_its_examples_with_index_and_key():
  class Bare(sources.Source):
    num_classes = 2

    def num_examples(self, split):
      return 8

    def read(self, split, shard_index=0, shard_count=1):
      return tf.data.Dataset.from_tensor_slices(
          {"image": np.zeros((8, 2, 2, 3), np.uint8), "label": np.zeros(8, np.int32)})

  with pytest.raises(ValueError, match="without \\['index', 'key'\\].*every_nth"):
    pipeline.train_batches(CONFIG, source=Bare(), batch_size=4, image_size=2, seed=0)


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
  images = np.random.default_rng(0).integers(0, 256, (37, 8, 8, 3), np.uint8)  # As IndexedSource.
  expected = preprocess.value_range(preprocess.resize(images[5], 8)).numpy()
  np.testing.assert_array_equal(batches[0]["image"][5], expected)


def test_eval_over_two_processes_gives_equal_batch_counts_and_every_example_once():
  source = IndexedSource(37)
  per_process = [list(pipeline.eval_batches(CONFIG, source=source, split="test", batch_size=8,
                                            image_size=6, process_index=i, process_count=2))
                 for i in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == pipeline.eval_steps(37, 8, 2) == 5
  assert all(b["image"].shape == (4, 6, 6, 3) for bs in per_process for b in bs)
  assert sorted(_real_labels(per_process[0]) + _real_labels(per_process[1])) == list(range(37))


@pytest.mark.parametrize("n, batch_size, multiple, processes, balanced", [
    (1438, 256, 1, 1, 240),  # The default job's train split: 6 batches, 98 padding -> 2.
    (1438, 256, 16, 1, 240),
    (1438, 256, 64, 1, 256),  # No multiple of 64 below 256 holds 1,438 in 6 batches.
    (37, 8, 1, 1, 8),  # 5 batches of 8 or of 8: no smaller batch keeps 5 batches.
    (33, 8, 1, 1, 7),
    (37, 8, 2, 2, 8),
    (1438, 256, 8, 2, 240),  # Shards of 719 per process, 6 batches of 120 each.
    (5, 512, 8, 1, 8),  # A split smaller than one batch: one batch of the smallest multiple.
])
def test_balanced_eval_batches_keep_the_batch_count_with_the_least_padding(
    n, batch_size, multiple, processes, balanced):
  source = IndexedSource(n)
  got = pipeline.balanced_eval_batch_size(source, "test", batch_size, multiple, processes)
  assert got == balanced and got % multiple == 0 and got % processes == 0
  assert pipeline.eval_steps(n, got, processes) == pipeline.eval_steps(n, batch_size, processes)
  if balanced > multiple:  # One multiple less would need another batch.
    assert pipeline.eval_steps(n, got - math.lcm(multiple, processes), processes) > (
        pipeline.eval_steps(n, batch_size, processes))


def test_balanced_eval_batches_cover_every_example_once():
  source = IndexedSource(33)
  size = pipeline.balanced_eval_batch_size(source, "test", 8, 1)
  batches = list(pipeline.eval_batches(CONFIG, source=source, split="test", batch_size=size,
                                       image_size=8))
  assert len(batches) == 5 and all(len(b["mask"]) == 7 for b in batches)
  assert _real_labels(batches) == list(range(33))  # 2 padding instead of 7.


# ----------------------------------------------------------------------------- pipeline strings

def test_the_augment_config_is_shorthand_for_a_pipeline_string():
  assert pipeline.default_pp_train(configuration.data_config().augment, 224) == (
      "decode|inception_crop(224, area_min=0.05)|flip_lr|value_range(-1, 1)")
  assert pipeline.default_pp_train(PLAIN, 32, multi_label=True) == (
      "decode|resize(32)|value_range(-1, 1)|multi_hot")
  source = IndexedSource(24)
  config = configuration.data_config()
  config.pp_train = "decode|inception_crop(8, area_min=0.05)|flip_lr|value_range(-1, 1)"
  by_string = list(itertools.islice(pipeline.train_batches(
      config, source=source, batch_size=8, image_size=8, seed=0), 4))
  _assert_same_batches(by_string, _train(source, 4, augment=configuration.data_config().augment))


def test_pipeline_strings_set_train_and_eval_preprocessing():
  config = configuration.data_config()
  config.update(pp_train="decode|randaug(2, 9)|resize(6)|value_range(0, 1)|onehot(smoothing=0.1)",
                pp_eval="decode|resize_small(7)|central_crop(5)|value_range(0, 1)|onehot")
  source = IndexedSource(16)
  (batch,) = itertools.islice(pipeline.train_batches(config, source=source, batch_size=8,
                                                     image_size=99, seed=0), 1)
  assert batch["image"].shape == (8, 6, 6, 3) and 0 <= batch["image"].min()
  np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-6)
  assert batch["label"].max() == pytest.approx(0.9 + 0.1 / 16)
  (evaluation, *_) = pipeline.eval_batches(config, source=source, batch_size=8, image_size=99)
  assert evaluation["image"].shape == (8, 5, 5, 3) and evaluation["label"].shape == (8, 16)


def test_pipeline_strings_that_cannot_fit_the_source_are_clear_errors(tmp_path):
  config = configuration.data_config()
  config.pp_train = "decode|resize(8)|onehot(3)"
  with pytest.raises(ValueError, match="3-class targets but the source has 16 classes"):
    pipeline.train_batches(config, source=IndexedSource(16), batch_size=8, image_size=8, seed=0)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  os.makedirs(tmp_path / "a")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "0.png")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "1.png")
  config.update(source="folder", root=str(tmp_path), test_fraction=0.5, pp_train="resize(8)")
  with pytest.raises(ValueError, match="no decoding op: start it with decode"):
    pipeline.train_batches(config, batch_size=1, image_size=8, seed=0)


def _batch_op_stream(pp_train, pp_batch, image_size=8):
  """start, n -> n train batches from `start` of a stream whose batch ops are `pp_batch`."""
  config = configuration.data_config()
  config.update(pp_train=pp_train, pp_batch=pp_batch)
  source = IndexedSource(24)
  return lambda start, n: list(itertools.islice(pipeline.train_batches(
      config, source=source, batch_size=8, image_size=image_size, seed=3, start_step=start), n))


def test_mixing_is_part_of_the_pure_function_of_seed_and_step():
  # mixup_or_cutmix draws its choice per step too (test_resume.py runs mixup and cutmix in sequence).
  stream = _batch_op_stream("decode|flip_lr|value_range|onehot", "mixup_or_cutmix(0.8, 1.0)")
  fresh = stream(0, 6)
  _assert_same_batches(stream(4, 2), fresh[4:])
  for batch in fresh:
    np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-6)
    assert (batch["label"] > 0).sum(-1).max() >= 2  # Mixed targets.


def test_whole_batch_augmentation_is_part_of_the_pure_function_of_seed_and_step():
  stream = _batch_op_stream("decode", "inception_crop(12, area_min=0.5)|flip_lr|value_range", 12)
  fresh = stream(0, 6)
  _assert_same_batches(stream(4, 2), fresh[4:])
  assert fresh[0]["image"].shape == (8, 12, 12, 3) and fresh[0]["image"].dtype == np.float32
  assert all(-1.0 <= b["image"].min() and b["image"].max() <= 1.0 for b in fresh)


def test_more_tf_data_threads_give_the_same_stream():
  source = IndexedSource(24)
  augment = configuration.data_config().augment
  config = configuration.data_config()
  config.threads = 2
  threaded = list(itertools.islice(pipeline.train_batches(
      config, source=source, batch_size=8, image_size=8, seed=0, augment=augment), 4))
  _assert_same_batches(threaded, _train(source, 4, augment=augment))


# ----------------------------------------------------------------------------- bad data

def _folder_with_bad_images(root, n=12, bad=(2, 7)):
  """Class folders holding n PNGs (image i filled with 10 i, labelled i % 2); some corrupt."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for i in range(n):
    path = os.path.join(root, f"c{i % 2}", f"{i:02d}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)).save(path)
    if i in bad:
      with open(path, "r+b") as f:
        f.truncate(30)


def test_undecodable_train_images_are_skipped_counted_and_refilled_from_their_batch(tmp_path):
  _folder_with_bad_images(str(tmp_path))
  config = configuration.data_config()
  config.update(source="folder", root=str(tmp_path), test_fraction=0.5,
                pp_train="decode|value_range(0, 255)", pp_eval="decode|value_range(0, 255)")
  source = sources.get_source(config)
  batches = pipeline.train_batches(config, source=source, batch_size=3, image_size=4, seed=0)
  epoch = list(itertools.islice(batches, 2))  # 6 train images of which 0-2 are corrupt.
  bad_keys = [os.path.basename(k) for k in batches.skipped_keys]
  assert batches.skipped == len(bad_keys) and set(bad_keys) <= {"02.png", "07.png"}
  values = [int(v) for b in epoch for v in b["image"][:, 0, 0, 0]]
  labels = [int(l) for b in epoch for l in b["label"]]
  assert all(v not in (20, 70) for v in values)  # Bad images never reach a batch...
  assert all(l == (v // 10) % 2 for v, l in zip(values, labels))  # ...nor change a label.
  assert len(set(values)) == 6 - batches.skipped  # Their slots hold copies of readable examples.
  evaluation = pipeline.eval_batches(config, source=source, batch_size=4, image_size=4)
  real = [int(v) for b in evaluation for v, m in zip(b["image"][:, 0, 0, 0], b["mask"]) if m]
  assert len(real) == len(set(real)) == 6 - evaluation.skipped
  assert batches.skipped + evaluation.skipped == 2


def test_eval_batches_with_keys_and_indices_name_each_real_example_by_its_key_and_position(tmp_path):
  """Encoded images (a folder, its bad files masked) and images in memory (digits) alike; padding
  and undecodable slots read index -1."""
  _folder_with_bad_images(str(tmp_path))
  config = configuration.data_config()
  config.update(source="folder", root=str(tmp_path), test_fraction=0.5,
                pp_eval="decode|value_range(0, 255)")
  batches = pipeline.eval_batches(config, batch_size=4, image_size=4, keys=True, indices=True)
  positions = []
  for batch in batches:
    index = batch[pipeline.INDEX]
    assert index.dtype == np.int64 and np.all((index >= 0) == (batch["mask"] > 0))
    positions += [int(i) for i in index[index >= 0]]
    for key, value, mask in zip(batch[pipeline.EXAMPLE_KEY], batch["image"][:, 0, 0, 0], batch["mask"]):
      if mask:  # 01.png holds 10, 11.png 110
        assert int(os.path.basename(key.decode())[:2]) * 10 == int(value), key
  assert len(positions) == len(set(positions)) == 6 - batches.skipped
  assert set(positions) <= set(range(6))
  digits = configuration.data_config()
  passed = list(pipeline.eval_batches(digits, split="test", batch_size=64, image_size=8, keys=True,
                                      indices=True))
  assert [key.decode() for key in passed[0][pipeline.EXAMPLE_KEY][:4]] == [
      f"digits/test#{i}" for i in range(4)]
  positions = np.concatenate([b[pipeline.INDEX] for b in passed])
  assert list(positions[:359]) == list(range(359)) and set(positions[359:]) == {-1}


def test_example_seeds_are_tf_fold_in_of_the_example_index():
  base = tf.constant([12, 34], tf.int64)
  seed_of = pipeline.example_seeds(base)
  for index in (0, 1, 977, 2**40):
    np.testing.assert_array_equal(
        seed_of({"index": tf.constant(index, tf.int64)}).numpy(),
        tf.random.experimental.stateless_fold_in(base, tf.constant(index, tf.int64)).numpy())


@pytest.mark.parametrize("op", ["mixup(0.8)", "cutmix(1.0)", "mixup_or_cutmix(0.8, 1.0)"])
def test_score_maps_refuse_batch_ops_that_mix_images(op):
  data = configuration.data_config()
  data.update(pp_train="decode", pp_batch="value_range|" + op, score_maps="maps/teacher")
  name = op.split("(")[0]
  with pytest.raises(ValueError, match=rf"mixes images \({name}\), which their score maps cannot "
                                       r"follow: token labeling mixes with MixToken"):
    pipeline.train_batches(data, batch_size=8, image_size=8, seed=0)
