"""Specification of the labelled + pseudo-labelled train split: which examples it holds, in which
order, with which targets, read by the unchanged pipeline; and the labels it refuses."""
import dataclasses

import numpy as np
import pytest

from vit_jax import configuration
from vit_jax.data import pipeline, pseudo_labeled, sources, split_slices
from vit_jax.data import pseudo_label_store as store
from vit_jax.data.pseudo_label_store import Counts, Manifest, PseudoLabelError

SOFT = np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], np.float32)


def _tiny(num_classes=3, multi_label=False):
  """12 examples: train = 0..9 (labels i % 3), test = 10, 11."""
  images = np.arange(12 * 12, dtype=np.uint8).reshape(12, 2, 2, 3)
  base = sources.ArraySource("tiny", images, np.arange(12) % 3, num_classes,
                             {"train": np.arange(10), "test": np.arange(10, 12)})
  base.multi_label = multi_label
  return split_slices.with_slices(base)


def _labels(directory, **changes):
  """Soft labels of train[4:] (6 examples) keeping #5 once and #8 twice."""
  manifest = dataclasses.replace(Manifest(
      source="tiny", split="train[4:]", num_classes=3, examples=6, shards=1, teacher="t",
      mode="soft", threshold=0.3, per_class=0), **changes)
  store.start(directory, manifest)
  labels = SOFT if manifest.mode == "soft" else SOFT.argmax(axis=1)
  store.write_labels(directory, manifest, ["tiny/train#5", "tiny/train#8"], labels, np.array([1, 2]),
                     Counts(examples=6, confident=2, kept=2, rows=3, per_class=(0, 1, 2)))
  return str(directory)


def _data(directory, **changes):
  data = configuration.data_config()
  data.update({"source": "tiny", "train_split": "train[:4]", "test_split": "test",
               "pseudo_labels": directory, **changes})
  return data


def test_the_train_split_spreads_the_labelled_among_the_pseudo_labelled_examples(tmp_path):
  source = pseudo_labeled.with_pseudo_labels(_tiny(), _data(_labels(tmp_path)))
  examples = list(source.read("train[:4]").as_numpy_iterator())
  # 4 labelled and 3 pseudo-labelled rows: labelled at positions p where floor((p + 1) 4 / 7) grows.
  assert pseudo_labeled.interleaving(4, 3).tolist() == [1, 0, 1, 0, 1, 0, 0]
  assert [ex["key"].decode() for ex in examples] == [
      "tiny/train#5", "tiny/train#0", "tiny/train#8", "tiny/train#1", "tiny/train#8",
      "tiny/train#2", "tiny/train#3"]
  assert [int(ex["index"]) for ex in examples] == list(range(7))
  assert source.num_examples("train[:4]") == 7
  targets = np.stack([ex["label"] for ex in examples])
  assert targets.dtype == np.float32 and targets.shape == (7, 3)
  np.testing.assert_allclose(targets[[0, 2, 4]], SOFT[[0, 1, 1]], rtol=1e-3)  # float16 on disk
  np.testing.assert_array_equal(targets[[1, 3, 5, 6]], np.eye(3)[[0, 1, 2, 0]])  # one-hot i % 3
  np.testing.assert_array_equal(examples[1]["image"], np.arange(12, dtype=np.uint8).reshape(2, 2, 3))


def test_shards_cover_the_split_and_the_other_splits_are_the_sources_own(tmp_path):
  source = pseudo_labeled.with_pseudo_labels(_tiny(), _data(_labels(tmp_path), labeled_repeats=2))
  assert source.num_examples("train[:4]") == 4 * 2 + 3
  whole = [ex["key"] for ex in source.read("train[:4]").as_numpy_iterator()]
  for i in range(2):
    shard = list(source.read("train[:4]", i, 2).as_numpy_iterator())
    assert [ex["key"] for ex in shard] == whole[i::2]
    assert source.shard_size("train[:4]", i, 2) == len(shard)
  test = list(source.read("test").as_numpy_iterator())
  assert [int(ex["label"]) for ex in test] == [1, 2]  # integer labels, as the source gives them


def test_the_unchanged_pipeline_batches_it_with_float_targets(tmp_path):
  data = _data(_labels(tmp_path), pp_train="decode|resize(4)|value_range(-1, 1)")
  source = pseudo_labeled.with_pseudo_labels(_tiny(), data)
  batch = next(pipeline.train_batches(data, source=source, batch_size=7, image_size=4, seed=0))
  assert batch["image"].shape == (7, 4, 4, 3) and batch["label"].dtype == np.float32
  # The whole split in one batch, shuffled: the top targets of #5, #8 (twice) and the labelled ones.
  np.testing.assert_allclose(np.sort(batch["label"].max(axis=1)), [0.7, 0.8, 0.8, 1, 1, 1, 1],
                             rtol=1e-3)


@pytest.mark.parametrize("labels, data, message", [
    (dict(source="digits"), {}, "made for other data: source 'digits' \\(this config's: 'tiny'\\)"),
    (dict(num_classes=4, mode="hard"), {}, "num_classes 4 \\(this config's: 3\\)"),
    (dict(examples=5), {}, "split 'train\\[4:\\]' of 5 examples \\(this config's has 6\\)"),
    ({}, dict(test_split="train[8:]"), "shares 2 examples with config.data.test_split"),
    ({}, dict(train_split="train[:5]"), "shares 1 examples with config.data.train_split"),
    ({}, dict(score_maps="/maps"), "pseudo_labels and config.data.score_maps are both set"),
])
def test_labels_for_other_data_or_overlapping_splits_are_refused(tmp_path, labels, data, message):
  with pytest.raises(PseudoLabelError, match=message):
    pseudo_labeled.with_pseudo_labels(_tiny(), _data(_labels(tmp_path, **labels), **data))


def test_missing_unfinished_or_unusable_labels_are_refused(tmp_path):
  with pytest.raises(PseudoLabelError, match="pseudo_labels=.*nothing' does not exist"):
    pseudo_labeled.with_pseudo_labels(_tiny(), _data(str(tmp_path / "nothing")))
  store.start(tmp_path / "unfinished", Manifest(
      source="tiny", split="train[4:]", num_classes=3, examples=6, shards=1, teacher="t",
      mode="soft", threshold=0.3, per_class=0))
  with pytest.raises(PseudoLabelError, match="has not finished"):
    pseudo_labeled.with_pseudo_labels(_tiny(), _data(str(tmp_path / "unfinished")))
  with pytest.raises(PseudoLabelError, match="source 'tiny' is multi-label"):
    pseudo_labeled.with_pseudo_labels(_tiny(multi_label=True), _data(_labels(tmp_path / "labels")))
  assert pseudo_labeled.with_pseudo_labels(_tiny(), _data("")).num_examples("train[:4]") == 4
