"""Specification of sliced split names: which examples 'train[:10%]' holds, for any source."""
import numpy as np
import pytest

from vit_jax import configuration
from vit_jax.data import sources, split_slices


def _keys(ds):
  return [ex["key"].decode() for ex in ds.as_numpy_iterator()]


def _source(n=10):
  images = np.arange(n * 12, dtype=np.uint8).reshape(n, 2, 2, 3)
  return split_slices.with_slices(sources.ArraySource(
      "ten", images, np.arange(n) % 3, 3, {"train": np.arange(n), "test": np.arange(n)}))


def test_digits_hide_labels_by_slicing_the_fixed_train_order():
  """train[:10%] is positions 0..143 of the 1438 train examples (round(143.8) = 144), train[10%:]
  the other 1294; keys are the base split's, 'index' the position in the slice."""
  digits = sources.get_source(configuration.data_config())
  whole = _keys(digits.read("train"))
  labelled = list(digits.read("train[:10%]").as_numpy_iterator())
  assert [ex["key"].decode() for ex in labelled] == whole[:144]
  assert [int(ex["index"]) for ex in labelled] == list(range(144))
  assert _keys(digits.read("train[10%:]")) == whole[144:]
  assert digits.num_examples("train[10%:]") == 1294 and digits.num_examples("test") == 359


@pytest.mark.parametrize("split, positions", [
    ("train[2:5]", [2, 3, 4]),
    ("train[-3:]", [7, 8, 9]),
    ("train[:-8]", [0, 1]),
    ("train[:15%]", [0, 1]),       # round(1.5) = 2
    ("train[:25%]", [0, 1]),       # round(2.5) = 2: halves go to the even integer, as in TFDS
    ("train[35%:-50%]", [4]),      # round(3.5) = 4, 10 - 5
    ("train[ 80% : ]", [8, 9]),
    ("train[:]", list(range(10))),
])
def test_bounds_are_integers_or_percentages_rounded_as_tfds(split, positions):
  source = _source()
  assert _keys(source.read(split)) == [f"ten/train#{p}" for p in positions]
  assert source.num_examples(split) == len(positions)


def test_shard_i_of_n_of_a_slice_holds_its_examples_i_i_plus_n_and_so_on():
  source = _source()
  shards = [list(source.read("train[3:]", i, 3).as_numpy_iterator()) for i in range(3)]
  for i, shard in enumerate(shards):
    assert [ex["key"].decode() for ex in shard] == [f"ten/train#{p}" for p in range(3 + i, 10, 3)]
    assert [int(ex["index"]) for ex in shard] == list(range(i, 7, 3))
    assert source.shard_size("train[3:]", i, 3) == len(shard)


@pytest.mark.parametrize("split, message", [
    ("train[:x]", "bound 'x' is not an integer or an integer percentage"),
    ("train[:10%", "is not a name or a slice name\\[start:stop\\]"),
    ("train[:101%]", "101% lies outside"),
    ("train[-11:]", "bound -11 lies outside the 10 examples of split 'train'"),
    ("train[5:5]", "selects no examples"),
    ("valid[:5]", "no split 'valid'"),
])
def test_malformed_or_empty_slices_are_errors_naming_the_split(split, message):
  with pytest.raises(ValueError, match=message):
    _source().num_examples(split)


def test_plain_names_and_other_attributes_are_the_base_sources():
  base = sources.ArraySource("ten", np.zeros((4, 2, 2, 3), np.uint8), np.arange(4), 4,
                             {"train": np.arange(4)})
  base.classes = ["a", "b", "c", "d"]
  source = split_slices.with_slices(base)
  assert source.classes == base.classes and source.num_classes == 4
  assert _keys(source.read("train", 1, 2)) == _keys(base.read("train", 1, 2))


def test_sources_that_slice_natively_are_not_wrapped():
  class Native(sources.ArraySource):
    slices_natively = True

  native = Native("n", np.zeros((2, 2, 2, 3), np.uint8), np.arange(2), 2, {"train": np.arange(2)})
  assert split_slices.with_slices(native) is native


def test_overlap_counts_shared_positions_of_one_split():
  first, rest = split_slices.resolve("train[:10%]", 1438), split_slices.resolve("train[10%:]", 1438)
  assert (first.overlap(rest), first.overlap(split_slices.resolve("train[100:200]", 1438))) == (0, 44)
  assert first.overlap(split_slices.resolve("test", 359)) == 0


def test_messages_name_the_source_not_its_wrapper():
  data = configuration.data_config()
  assert sources.get_source(data).describe() == "ArraySource"
