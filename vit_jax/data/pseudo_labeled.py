"""Labelled plus pseudo-labelled examples as one train split, for Noisy Student self-training.

With config.data.pseudo_labels=DIR (a teacher's labels of another split of the same source, written
by `python -m vit_jax.pseudo_labels`), `get_source` wraps the source so that its train split
(config.data.train_split: the labelled examples) also holds the pseudo-labelled examples DIR kept.
Every example of that split carries a float32 (K,) target: one-hot for a labelled example, the
teacher's distribution (soft) or one-hot of its class (hard) for a pseudo-labelled one, which
softmax_xent takes as given (config.train.label_smoothing does not apply to them). So the pipeline,
the trainer, resume and multi-host training read it like any split. The other splits (the test
split) are the source's own.

The split's fixed order: the `labeled_repeats` passes over the labelled split, spread evenly among
the pseudo-labelled examples (which come in the order of their split, an example DIR duplicates
appearing `copies` times in a row); shard i of n holds positions i, i + n, ...; keys are the source's.
To read its shard a process reads both splits whole (not decoding), as with data.global_order.

Refused, naming the difference: labels made for another source, class count or split size, an
unfinished directory, labels of the test split or of examples that are also labelled, a multi-label
source, and score maps alongside (pseudo-labelled examples have none).
"""
import os
from typing import List

import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax import paths
from vit_jax.data import pseudo_label_store, split_slices
from vit_jax.data.pseudo_label_store import PseudoLabelError, PseudoLabels
from vit_jax.data.source import Source, check_shard, source_name

LABELED, PSEUDO = 0, 1  # Which part each position of the split comes from (interleaving).


def interleaving(labeled: int, pseudo: int) -> np.ndarray:
  """(labeled + pseudo,) of LABELED / PSEUDO: position p is labelled when floor((p + 1) L / N)
  exceeds floor(p L / N), which spreads the L labelled positions evenly over all N."""
  total = labeled + pseudo
  steps = np.diff(np.arange(total + 1, dtype=np.int64) * labeled // max(total, 1))
  return np.where(steps > 0, LABELED, PSEUDO).astype(np.int64)


class PseudoLabeledSource(Source):
  """`base` whose split `labeled_split` also holds the examples of `labels` (module doc)."""

  def __init__(self, base: Source, labeled_split: str, labels: PseudoLabels,
               labeled_repeats: int = 1):
    self.base, self.labeled_split, self.labels = base, labeled_split, labels
    self.num_classes, self.multi_label = base.num_classes, False
    self.labeled_repeats = labeled_repeats
    self._labeled_rows = base.num_examples(labeled_split) * labeled_repeats
    self._order = interleaving(self._labeled_rows, labels.rows)

  def __getattr__(self, name):
    if name == "base":  # Not yet set (e.g. while unpickling): never recurse.
      raise AttributeError(name)
    return getattr(self.base, name)

  def describe(self) -> str:
    return f"{self.base.describe()} with pseudo-labels"

  def class_names(self) -> List[str]:
    return self.base.class_names()

  def num_examples(self, split: str) -> int:
    return len(self._order) if split == self.labeled_split else self.base.num_examples(split)

  def shard_size(self, split: str, shard_index: int = 0, shard_count: int = 1) -> int:
    if split != self.labeled_split:
      return self.base.shard_size(split, shard_index, shard_count)
    check_shard(shard_index, shard_count)
    return len(range(shard_index, len(self._order), shard_count))

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    if split != self.labeled_split:
      return self.base.read(split, shard_index, shard_count)
    check_shard(shard_index, shard_count)
    parts = [self._labeled(), self._pseudo_labeled()]
    examples = tf.data.Dataset.choose_from_datasets(
        parts, tf.data.Dataset.from_tensor_slices(self._order))
    return examples.enumerate().shard(shard_count, shard_index).map(
        lambda position, example: {**example, "index": position})

  def files(self, split: str, shard_index: int = 0, shard_count: int = 1) -> List[str]:
    if split != self.labeled_split:
      return self.base.files(split, shard_index, shard_count)
    return (self.base.files(self.labeled_split, 0, 1) +
            self.base.files(self.labels.manifest.split, 0, 1))

  def _labeled(self) -> tf.data.Dataset:
    num_classes = self.num_classes

    def one_hot(example):
      return {"image": example["image"], "key": example["key"],
              "label": tf.one_hot(example["label"], num_classes, dtype=tf.float32)}

    return self.base.read(self.labeled_split, 0, 1).map(one_hot).repeat(self.labeled_repeats)

  def _pseudo_labeled(self) -> tf.data.Dataset:
    """The examples of the labelled split of `labels` that it kept, each `copies` times in a row."""
    rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(self.labels.keys.astype(object)),
        tf.range(len(self.labels.keys), dtype=tf.int64)), default_value=-1)
    targets, copies = tf.constant(self.labels.targets), tf.constant(self.labels.copies)

    def copied(example):
      row = rows.lookup(example["key"])
      kept = tf.maximum(row, 0)
      times = tf.where(row >= 0, tf.gather(copies, kept), 0)
      repeat = lambda value: tf.repeat(value[None], times, axis=0)  # noqa: E731
      return {"image": repeat(example["image"]), "key": repeat(example["key"]),
              "label": repeat(tf.gather(targets, kept))}

    return self.base.read(self.labels.manifest.split, 0, 1).map(copied).unbatch()


def _check(source: Source, data_config: ml_collections.ConfigDict, labels: PseudoLabels,
           directory: str) -> None:
  found = labels.manifest
  wanted = dict(source=source_name(data_config), num_classes=source.num_classes)
  differing = [f"{name} {getattr(found, name)!r} (this config's: {value!r})"
               for name, value in wanted.items() if getattr(found, name) != value]
  if not differing and source.num_examples(found.split) != found.examples:
    differing.append(f"split {found.split!r} of {found.examples} examples (this config's has "
                     f"{source.num_examples(found.split)})")
  if differing:
    raise PseudoLabelError(f"config.data.pseudo_labels={directory} holds labels made for other "
                           f"data: {'; '.join(differing)}; label this config's data with python -m "
                           "vit_jax.pseudo_labels")
  pseudo = split_slices.positions(source, found.split)
  for key, meaning in (("test_split", "evaluates on"), ("train_split", "trains on with labels")):
    split = data_config[key]
    shared = pseudo.overlap(split_slices.positions(source, split))
    if shared:
      raise PseudoLabelError(
          f"the pseudo-labels in {directory} are of split {found.split!r}, which shares {shared} "
          f"examples with config.data.{key}={split!r} that this config {meaning}: pseudo-label "
          "a split disjoint from both (e.g. train[:10%] labelled, train[10%:] pseudo-labelled)")
  if not labels.rows:
    raise PseudoLabelError(f"the pseudo-labels in {directory} kept no example (threshold "
                           f"{found.threshold}): label again with a lower --threshold")


def with_pseudo_labels(source: Source, data_config: ml_collections.ConfigDict) -> Source:
  """`source` whose train split also holds data_config.pseudo_labels' examples; `source` itself
  when that key is empty."""
  directory = paths.expand(data_config.get("pseudo_labels", ""))
  if not directory:
    return source
  if not os.path.isdir(directory):
    raise PseudoLabelError(f"config.data.pseudo_labels={directory!r} does not exist: make it with "
                           "python -m vit_jax.pseudo_labels --output=DIR, or clear the key")
  if source.multi_label:
    raise PseudoLabelError(f"config.data.pseudo_labels is set, but source {source_name(data_config)!r}"
                           " is multi-label: pseudo-labels are single-label class distributions")
  if data_config.get("score_maps", ""):
    raise PseudoLabelError("config.data.pseudo_labels and config.data.score_maps are both set: "
                           "pseudo-labelled examples have no score maps; clear one of them")
  repeats = data_config.get("labeled_repeats", 1)
  if repeats < 0:
    raise PseudoLabelError(f"config.data.labeled_repeats={repeats} must be >= 0")
  labels = pseudo_label_store.load(directory)
  _check(source, data_config, labels, directory)
  return PseudoLabeledSource(source, data_config.train_split, labels, repeats)
