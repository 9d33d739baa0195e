"""Specification of ReaL-style evaluation on a hand-made labels file: an example is right when its
top-1 class is in its set, examples with an empty set are left out of the denominator, and examples
find their entry by position (shifted by a slice's start) or by the ILSVRC2012_val_<n> in their key."""
import json

import numpy as np
import pytest

from vit_jax.metrics import real_labels

ENTRIES = [[1], [0, 2], [], [3], [], [2, 3]]  # as real.json: entry 0 is ILSVRC2012_val_00000001


@pytest.fixture
def labels(tmp_path):
  path = tmp_path / "real.json"
  path.write_text(json.dumps(ENTRIES))
  return real_labels.load(str(path), num_classes=4)


def test_top1_counts_when_in_the_set_and_empty_sets_are_left_out(labels):
  predictions = np.array([1, 2, 0, 0, 3, 3])  # right, right, (no labels), wrong, (no labels), right
  result = real_labels.accuracy(predictions, real_labels.entries_by_position(np.arange(6)), labels)
  assert result == {"accuracy": 3 / 4, "examples": 4.0, "without_labels": 2.0}


def test_a_sliced_split_starts_at_its_slices_entry(labels):
  entries = real_labels.entries_by_position(np.array([0, 1, 2]), start=3)  # 'validation[3:]'
  assert list(entries) == [3, 4, 5]
  assert real_labels.accuracy(np.array([3, 0, 1]), entries, labels)["accuracy"] == 0.5


def test_examples_find_their_entry_by_the_file_name_in_their_key(labels):
  keys = [b"/data/val/n01440764/ILSVRC2012_val_00000006.JPEG", "x/ILSVRC2012_val_00000002.png"]
  entries = real_labels.entries_by_file_name(keys)
  assert list(entries) == [5, 1]
  assert real_labels.accuracy(np.array([2, 1]), entries, labels)["accuracy"] == 0.5
  with pytest.raises(ValueError, match=r"'imagenet2012-validation.tfrecord-00000-of-00064__7' carries "
                                       r"no ILSVRC2012_val_<n> file name"):
    real_labels.entries_by_file_name(["imagenet2012-validation.tfrecord-00000-of-00064__7"])


def test_a_file_is_reordered_to_the_order_a_split_is_read_in(labels):
  names = ["ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG"]
  assert real_labels.reorder(labels, names) == [[3], [0, 2], []]


def test_bad_files_and_splits_the_file_does_not_cover_are_refused_in_one_line(labels, tmp_path):
  with pytest.raises(ValueError, match=r"has 6 entries, and an example needs entry 6: labels made for "
                                       r"another split"):
    real_labels.accuracy(np.array([0]), np.array([6]), labels)
  bad = tmp_path / "bad.json"
  for content, message in [("{}", "holds a dict, not a list"), ("[[1], 3]", "entry 1 is 3, not a list"),
                           ("[[1], [4]]", "entry 1 names class 4, outside the model's 4 classes"),
                           ("[[1],", "is not JSON")]:
    bad.write_text(content)
    with pytest.raises(ValueError, match=message):
      real_labels.load(str(bad), num_classes=4)
  with pytest.raises(FileNotFoundError, match="no ReaL labels file at"):
    real_labels.load(str(tmp_path / "missing.json"), num_classes=4)
