"""The `Source` interface and the registry of sources by name (config.data.source).

Below every source module: sources.py (the built-in digits, folder and tfds) and jft.py implement
`Source` and register themselves here; sources.py imports them all by name for `get_source`.
"""
import abc
from typing import Callable, Dict, List

import ml_collections
import tensorflow as tf

from vit_jax.plugins import Registry

SOURCES: Registry[Callable[[ml_collections.ConfigDict], "Source"]] = Registry(
    "data source", "config.data.source")
register_source = SOURCES.register  # decorator: factory(data_config) -> Source as data.source=name


def check_shard(shard_index: int, shard_count: int) -> None:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must lie in [0, shard_count={shard_count}).")


def source_name(data_config: ml_collections.ConfigDict) -> str:
  """How stored labels name the source of config.data: 'digits', 'tfds:cifar10', ..."""
  return data_config.source + (f":{data_config.name}" if data_config.name else "")


def lookup_split(splits: Dict, split: str, what: str):
  if split not in splits:
    raise ValueError(f"{what} has no split {split!r}; its splits are {sorted(splits)}. "
                     "Set config.data.train_split / test_split to one of them.")
  return splits[split]


class Source(abc.ABC):
  """A labelled image dataset with named splits, read as a deterministic, shardable tf.data."""
  num_classes: int
  multi_label: bool = False  # True: examples carry 'labels' (int32 (n,)) instead of 'label'.
  # True: read() and num_examples() take sliced split names ('train[:10%]') themselves (TFDS); others
  # get them from split_slices.with_slices, which get_source applies.
  slices_natively: bool = False

  @abc.abstractmethod
  def num_examples(self, split: str) -> int:
    """Returns the number of examples in `split` (all shards together)."""

  def shard_size(self, split: str, shard_index: int = 0, shard_count: int = 1) -> int:
    """Returns the number of examples in shard `shard_index` of `shard_count` of `split`."""
    check_shard(shard_index, shard_count)
    return len(range(shard_index, self.num_examples(split), shard_count))

  @abc.abstractmethod
  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    """Returns shard `shard_index` of `shard_count` of `split`, in a fixed order, unbatched.

    The shards of one split are disjoint and together hold every example once.
    """

  def describe(self) -> str:
    """What messages call this source; a wrapper names the source it wraps."""
    return type(self).__name__

  def class_names(self) -> List[str]:
    """The name of every class, by label id (saved with a run so that predictions name classes);
    by default the ids themselves, '0', '1', ..."""
    return [str(i) for i in range(self.num_classes)]

  def files(self, split: str, shard_index: int = 0, shard_count: int = 1) -> List[str]:
    """The record files that shard reads (to name an unreadable one); [] if it reads none."""
    del split, shard_index, shard_count
    return []
