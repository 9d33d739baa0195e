"""Slices of a split as splits: 'train[:10%]' is the first tenth of 'train', for every source.

Self-training hides the labels of part of a split ('train[:10%]' labelled, 'train[10%:]' unlabelled);
the slice is taken in the split's fixed order (the order `Source.read(split)` yields), so it names
the same examples on every host and in every run. The syntax and the rounding are TFDS's:

  name[start:stop]   start and stop each empty, an integer or an integer percentage ('10%');
                     negative values count from the end; p% of n examples is round(p * n / 100)
                     (Python's round: halves go to the even integer), as TFDS's default 'closest'.

So on a split of 1438 examples, 'train[:10%]' is positions 0..143 (round(143.8) = 144 examples) and
'train[10%:]' positions 144..1437. A slice's examples keep the base split's 'key' (pseudo-labels and
messages name them as the base source does) and get 'index' = their position in the slice.
`with_slices` gives any source this; TFDS sources slice natively (the same examples, each host
reading only its part) and are returned as they are.
"""
import dataclasses
import re
from typing import List

import tensorflow as tf

from vit_jax.data.source import Source, check_shard

_SLICE = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<start>[^:\[\]]*):(?P<stop>[^:\[\]]*)\]$")
_BOUND = re.compile(r"^\s*(?P<value>[+-]?\d+)\s*(?P<percent>%?)\s*$")


@dataclasses.dataclass(frozen=True)
class SplitSlice:
  """Positions [start, stop) of split `name` in its fixed order."""
  name: str
  start: int
  stop: int

  def __len__(self) -> int:
    return self.stop - self.start

  def overlap(self, other: "SplitSlice") -> int:
    """How many examples the two slices share (0 for slices of different splits)."""
    if self.name != other.name:
      return 0
    return max(0, min(self.stop, other.stop) - max(self.start, other.start))


def is_sliced(split: str) -> bool:
  return "[" in split or "]" in split


def _match(split: str) -> re.Match:
  match = _SLICE.match(split)
  if not match:
    raise ValueError(f"split {split!r} is not a name or a slice name[start:stop]; write e.g. "
                     "'train[:10%]' or 'train[10%:]'")
  return match


def base_name(split: str) -> str:
  """'train[:10%]' -> 'train'; a plain name is returned as it is."""
  return _match(split).group("name") if is_sliced(split) else split


def _bound(text: str, num_examples: int, split: str, default: int) -> int:
  if not text.strip():
    return default
  match = _BOUND.match(text)
  if not match:
    raise ValueError(f"split {split!r}: bound {text!r} is not an integer or an integer percentage; "
                     "write e.g. 'train[:10%]', 'train[100:]' or 'train[-50:]'")
  value = int(match.group("value"))
  if match.group("percent"):
    if abs(value) > 100:
      raise ValueError(f"split {split!r}: {value}% lies outside [-100%, 100%]")
    value = int(round(value * num_examples / 100.0))
  if abs(value) > num_examples:
    raise ValueError(f"split {split!r}: bound {value} lies outside the {num_examples} examples of "
                     f"split {base_name(split)!r}")
  return value + num_examples if value < 0 else value


def resolve(split: str, num_examples: int) -> SplitSlice:
  """The positions a split name covers in a base split of `num_examples` (all of a plain name).

  A malformed slice, a bound beyond the split or an empty slice is an error naming the split.
  """
  if not is_sliced(split):
    return SplitSlice(split, 0, num_examples)
  match = _match(split)
  start = _bound(match.group("start"), num_examples, split, 0)
  stop = _bound(match.group("stop"), num_examples, split, num_examples)
  if stop <= start:
    raise ValueError(f"split {split!r} selects no examples (positions {start} to {stop} of "
                     f"{num_examples}); give a start below the stop")
  return SplitSlice(match.group("name"), start, stop)


def positions(source: Source, split: str) -> SplitSlice:
  """The positions `split` covers in its base split of `source` (any source, TFDS too)."""
  return resolve(split, source.num_examples(base_name(split)))


class SlicedSplits(Source):
  """A source whose split names may carry a slice; plain names are read from the base as they are.

  Shard i of n of a slice holds its examples i, i + n, ...; to read it a process reads the base
  split in its fixed order up to the slice's end (not decoding: the pipeline decodes later).
  Other attributes (e.g. a folder source's `classes`) are the base source's.
  """

  def __init__(self, base: Source):
    self.base = base
    self.num_classes = base.num_classes
    self.multi_label = base.multi_label

  def __getattr__(self, name):
    if name == "base":  # Not yet set (e.g. while unpickling): never recurse.
      raise AttributeError(name)
    return getattr(self.base, name)

  def describe(self) -> str:
    return self.base.describe()

  def class_names(self) -> List[str]:
    return self.base.class_names()

  def num_examples(self, split: str) -> int:
    return len(positions(self.base, split)) if is_sliced(split) else self.base.num_examples(split)

  def shard_size(self, split: str, shard_index: int = 0, shard_count: int = 1) -> int:
    if not is_sliced(split):
      return self.base.shard_size(split, shard_index, shard_count)
    check_shard(shard_index, shard_count)
    return len(range(shard_index, self.num_examples(split), shard_count))

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    if not is_sliced(split):
      return self.base.read(split, shard_index, shard_count)
    check_shard(shard_index, shard_count)
    part = positions(self.base, split)
    examples = self.base.read(part.name, 0, 1).take(part.stop).skip(part.start)
    return examples.enumerate().shard(shard_count, shard_index).map(
        lambda position, example: {**example, "index": position})

  def files(self, split: str, shard_index: int = 0, shard_count: int = 1) -> List[str]:
    if not is_sliced(split):
      return self.base.files(split, shard_index, shard_count)
    return self.base.files(base_name(split), 0, 1)


def with_slices(source: Source) -> Source:
  """`source`, answering sliced split names too (TFDS sources, which slice natively, as they are)."""
  if source.slices_natively:
    return source
  return SlicedSplits(source)
