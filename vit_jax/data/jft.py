"""JFT-like multi-label data: sharded TFRecords of tf.train.Example, written and read here.

Layout of a dataset directory (written by `python -m vit_jax.data.jft_write`):

  DIR/jft_info.json                       num_classes, optional class names, the shards of each
                                          split with their example counts, the skipped inputs
  DIR/<split>.tfrecord-00000-of-00016     tf.train.Example records:
      image/encoded     bytes     the encoded image (JPEG, PNG, ...) as given
      image/class/label int64[n]  its labels (any number, each in [0, num_classes))
      image/filename    bytes     where the image came from

The reader (`JftSource`, config.data.source='jft', config.data.root=DIR) yields 'labels' of variable
length; the pipeline turns them into multi-hot targets, and the trainer uses sigmoid cross-entropy.
With at least as many shards as processes each process reads only its own files (file-level
sharding); otherwise every process reads all files and keeps every n-th record.
"""
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax.data import source

INFO_FILE = "jft_info.json"
FORMAT = "vit_jax.jft/1"
IMAGE, LABELS, FILENAME = "image/encoded", "image/class/label", "image/filename"


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}.tfrecord-{index:05d}-of-{count:05d}"


def make_example(image_bytes: bytes, labels: Sequence[int], filename: str = "") -> bytes:
  """One serialized tf.train.Example of the format above."""
  feature = {
      IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      LABELS: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(l) for l in labels])),
      FILENAME: tf.train.Feature(bytes_list=tf.train.BytesList(value=[filename.encode()])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_info(directory: str) -> dict:
  path = os.path.join(directory, INFO_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"No {INFO_FILE} in {directory!r}: point config.data.root at a directory written by "
        "`python -m vit_jax.data.jft_write --images=DIR --labels=labels.csv --output=OUT`.")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def write_split(directory: str, split: str, examples: Iterable[Tuple[str, bytes, Sequence[int]]],
                *, num_classes: int, num_shards: int, class_names: Optional[List[str]] = None,
                skipped: Sequence[Dict[str, str]] = ()) -> dict:
  """Writes (filename, image bytes, labels) round-robin into `num_shards` shards of `split`.

  Labels must lie in [0, num_classes) (an error names the file otherwise). Updates jft_info.json
  (other splits already there are kept; num_classes must agree) and returns the info dict.
  """
  if num_shards <= 0:
    raise ValueError(f"num_shards={num_shards} must be positive.")
  tf.io.gfile.makedirs(directory)
  info_path = os.path.join(directory, INFO_FILE)
  info = {"format": FORMAT, "num_classes": num_classes, "splits": {}, "skipped": {}}
  if tf.io.gfile.exists(info_path):
    info = read_info(directory)
    if info["num_classes"] != num_classes:
      raise ValueError(f"{info_path} says num_classes={info['num_classes']}, this split has "
                       f"{num_classes}: write every split with the same --num_classes.")
  if class_names is not None:
    if len(class_names) != num_classes:
      raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}.")
    info["class_names"] = list(class_names)
  names = [shard_name(split, i, num_shards) for i in range(num_shards)]
  counts = [0] * num_shards
  writers = [tf.io.TFRecordWriter(os.path.join(directory, n)) for n in names]
  try:
    for i, (filename, image_bytes, labels) in enumerate(examples):
      bad = [l for l in labels if not 0 <= int(l) < num_classes]
      if bad:
        raise ValueError(f"{filename}: labels {bad} are outside [0, num_classes={num_classes}); "
                         "fix the labels file or pass the right --num_classes.")
      writers[i % num_shards].write(make_example(image_bytes, labels, filename))
      counts[i % num_shards] += 1
  finally:
    for w in writers:
      w.close()
  info["splits"][split] = {"files": [{"name": n, "num_examples": c} for n, c in zip(names, counts)]}
  info["skipped"][split] = list(skipped)
  with tf.io.gfile.GFile(info_path, "w") as f:
    json.dump(info, f, indent=1)
  return info


class JftSource(source.Source):
  """Reads a directory written by write_split; examples carry variable-length 'labels'."""
  multi_label = True

  def __init__(self, directory: str):
    if not directory:
      raise ValueError("config.data.root is empty: set it to the directory written by jft_write.")
    self._dir = directory
    self._info = read_info(directory)
    self.num_classes = int(self._info["num_classes"])
    self._class_names = self._info.get("class_names")
    for split, entry in self._info["splits"].items():
      missing = [f["name"] for f in entry["files"]
                 if not tf.io.gfile.exists(os.path.join(directory, f["name"]))]
      if missing:
        raise FileNotFoundError(f"Split {split!r} of {directory} lacks shard files {missing} "
                                f"listed in {INFO_FILE}: copy them, or rewrite the split.")
    if not any(f["num_examples"] for e in self._info["splits"].values() for f in e["files"]):
      raise ValueError(f"{directory} holds no examples (every input was skipped when writing?).")

  def _files(self, split: str) -> List[dict]:
    return source.lookup_split(self._info["splits"], split, f"JFT-like data {self._dir}")["files"]

  def num_examples(self, split: str) -> int:
    return sum(f["num_examples"] for f in self._files(split))

  def class_names(self) -> List[str]:
    """The names written with the data (jft_write --class_names), else the ids."""
    return list(self._class_names) if self._class_names else super().class_names()

  def _assignment(self, split: str, shard_index: int, shard_count: int):
    """(files as (path, first index, count), example-level shard or None) of one shard."""
    source.check_shard(shard_index, shard_count)
    files = self._files(split)
    starts = np.concatenate([[0], np.cumsum([f["num_examples"] for f in files])])
    entries = [(os.path.join(self._dir, f["name"]), int(s), f["num_examples"])
               for f, s in zip(files, starts)]
    if len(files) >= shard_count:  # File-level: this process opens only its own files.
      return entries[shard_index::shard_count], None
    return entries, (shard_index, shard_count)

  def shard_size(self, split: str, shard_index: int = 0, shard_count: int = 1) -> int:
    entries, every = self._assignment(split, shard_index, shard_count)
    if every is None:
      return sum(count for _, _, count in entries)
    return len(range(shard_index, self.num_examples(split), shard_count))

  def files(self, split: str, shard_index: int = 0, shard_count: int = 1) -> List[str]:
    return [path for path, _, _ in self._assignment(split, shard_index, shard_count)[0]]

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    entries, every = self._assignment(split, shard_index, shard_count)
    num_classes = self.num_classes

    def records(path, start):
      name = tf.strings.regex_replace(path, r"^.*/", "")
      return tf.data.TFRecordDataset(path).enumerate().map(
          lambda j, record: (start + j, tf.strings.join([name, ":", tf.strings.as_string(j)]),
                             record))

    paths = tf.constant([p for p, _, _ in entries], tf.string)
    starts = tf.constant([s for _, s, _ in entries], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((paths, starts)).interleave(
        records, cycle_length=max(1, min(len(entries), 8)), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if every is not None:
      ds = ds.filter(lambda index, key, record: index % every[1] == every[0])

    def parse(index, key, record):
      features = tf.io.parse_single_example(record, {
          IMAGE: tf.io.FixedLenFeature([], tf.string),
          LABELS: tf.io.VarLenFeature(tf.int64),
      })
      labels = tf.cast(tf.sparse.to_dense(features[LABELS]), tf.int32)
      check = tf.debugging.Assert(
          tf.reduce_all((labels >= 0) & (labels < num_classes)),
          ["Record", key, f"has labels outside [0, {num_classes}):", labels])
      with tf.control_dependencies([check]):
        labels = tf.identity(labels)
      return {"image": features[IMAGE], "labels": labels, "index": index, "key": key}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


@source.register_source("jft")
def jft_source(data_config: ml_collections.ConfigDict) -> source.Source:
  return JftSource(data_config.root)
