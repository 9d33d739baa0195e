"""Where examples come from: one small class per source behind the `Source` interface, by name.

A source reads a split in a fixed order (shuffling, decoding and batching belong to the pipeline)
as examples {'image': encoded bytes (tf.string) or uint8 (H, W, C); 'label': int32 () or, for
multi-label sources, 'labels': int32 (n,); 'index': int64 (); 'key': string}. 'index' is the
example's position in the split, the same whatever the number of processes (augmentation seeds come
from it), and 'key' names the file or record it came from (messages about bad data quote it).
A new source is a function config -> Source registered with @register_source(name); the built-in
ones are 'digits' (embedded), 'folder', 'tfds' (incl. the ImageNet-21k builder) and 'jft'.
"""
import logging
import os
from typing import Dict, List, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax import paths
# The interface and its registry live in source.py, below the sources that implement it; the
# built-in sources outside this module are imported by name here, which registers them.
from vit_jax.data import jft  # noqa: F401  # registers 'jft'  # pylint: disable=unused-import
from vit_jax.data import pseudo_labeled, split_slices
from vit_jax.data.source import (SOURCES, Source, check_shard, lookup_split,  # noqa: F401
                                 register_source)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SPLIT_SEED = 0  # Fixed seed of the train/test permutation for sources without their own splits.


def hide_gpus_from_tensorflow() -> None:
  """Keeps TensorFlow (used only for tf.data) off the GPUs, which belong to JAX."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass  # The TF runtime is already initialized (devices then stay as they are) or has no GPUs.


def keep_tensorflow_threads_few() -> None:
  """Gives TensorFlow's global op pools one thread each: TF runs only the input pipeline, whose ops
  run in tf.data's private pool (data.threads), and idle threads of larger pools spin on the cores
  XLA computes on (figures: experiments/README.md, section "Input pipeline")."""
  try:
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
  except RuntimeError:
    pass  # The TF runtime is already initialized: its pools stay as they are.


hide_gpus_from_tensorflow()
keep_tensorflow_threads_few()


def available_sources() -> Tuple[str, ...]:
  return SOURCES.names()


def get_source(data_config: ml_collections.ConfigDict) -> Source:
  """Builds the source named by data_config.source (see vit_jax.configuration.data_config for the
  keys), whose splits may be slices ('train[:10%]', split_slices.py) and whose train split also holds
  the examples of data_config.pseudo_labels when it is set (pseudo_labeled.py)."""
  source = split_slices.with_slices(SOURCES.get(data_config.source)(data_config))
  return pseudo_labeled.with_pseudo_labels(source, data_config)


def every_nth(ds: tf.data.Dataset, shard_index: int, shard_count: int,
              key_prefix: str) -> tf.data.Dataset:
  """Shard i of n of a fixed-order dataset: examples i, i + n, ..., with 'index' and 'key' added."""
  check_shard(shard_index, shard_count)

  def tag(index, example):
    key = example.get("key", tf.strings.join([key_prefix, tf.strings.as_string(index)]))
    return {**example, "index": index, "key": key}

  return ds.enumerate().shard(shard_count, shard_index).map(tag)


def _split_indices(n: int, test_fraction: float) -> Dict[str, np.ndarray]:
  """Splits range(n) into 'train'/'test' by a fixed-seed permutation (same answer on every host)."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction={test_fraction} must lie strictly between 0 and 1.")
  perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
  num_test = max(1, int(round(n * test_fraction)))
  return {"train": perm[num_test:], "test": perm[:num_test]}


class ArraySource(Source):
  """Decoded uint8 images and int labels held in memory, with named splits of example indices."""

  def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, num_classes: int,
               splits: Dict[str, np.ndarray]):
    self.name, self.num_classes = name, num_classes
    self._images, self._labels, self._splits = images, labels.astype(np.int32), splits

  def num_examples(self, split: str) -> int:
    return len(lookup_split(self._splits, split, self.name))

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    check_shard(shard_index, shard_count)
    idx = lookup_split(self._splits, split, self.name)
    # Index and key as arrays, sliced with the examples: no per-example op (this source is used
    # for small images, where per-example overhead dominates).
    mine = np.arange(shard_index, len(idx), shard_count)
    return tf.data.Dataset.from_tensor_slices({
        "image": self._images[idx[mine]], "label": self._labels[idx[mine]],
        "index": mine.astype(np.int64),
        "key": np.array([f"{self.name}/{split}#{i}" for i in mine], dtype=object)})


@register_source("digits")
def digits_source(data_config: ml_collections.ConfigDict) -> Source:
  """sklearn's bundled 8x8 handwritten digits (1797 images, 10 classes): needs no download."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # Values 0..16 -> 0..255.
  images = np.repeat(gray[..., None], 3, axis=-1)
  return ArraySource("digits", images, digits.target, 10,
                     _split_indices(len(images), data_config.test_fraction))


class _Listing:
  """What listing folder/<class>/ found: (path, label) of every entry named like an image, sorted
  by class then name; those that are not readable files (dangling symlinks, directories named
  like images); and the class folders (missing or) without a readable image."""

  def __init__(self, folder: str, classes: Sequence[str]):
    self.files: List[Tuple[str, int]] = []
    self.unreadable: List[str] = []
    self.empty: List[str] = []
    for label, name in enumerate(classes):
      class_dir = os.path.join(folder, name)
      entries = sorted(os.scandir(class_dir), key=lambda e: e.name) if os.path.isdir(class_dir) else []
      readable = 0
      for entry in entries:
        if entry.name.lower().endswith(IMAGE_EXTENSIONS):
          self.files.append((entry.path, label))
          if entry.is_file():  # Follows symlinks: False for a dangling one and for a directory.
            readable += 1
          else:
            self.unreadable.append(entry.path)
      if not readable:
        self.empty.append(class_dir)


def _subdirs(path: str) -> List[str]:
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


class FolderSource(Source):
  """Images in root/<class>/*.{jpg,jpeg,png}, or in root/{train,test}/<class>/ when those exist.

  Every class folder must hold a readable image (the train one, with split folders: a test split may
  lack images of a class, or the class folder); else it is an error naming the folder. An entry
  named like an image that is not a readable file (a dangling symlink, a directory 'x.jpg/') stays
  an example that cannot be decoded: it is skipped and counted like a corrupt image (the trainer's
  skipped_examples), logged once here with the list in `unreadable`.
  """

  def __init__(self, root: str, test_fraction: float = 0.2):
    root = paths.expand(root)
    if not root or not os.path.isdir(root):
      raise FileNotFoundError(
          f"Image folder root {root!r} does not exist: set config.data.root to a directory laid "
          "out as root/<class>/*.jpg (or root/train/<class>/ and root/test/<class>/).")
    has_split_dirs = all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test"))
    class_parent = os.path.join(root, "train") if has_split_dirs else root
    self.classes = _subdirs(class_parent)
    self.num_classes = len(self.classes)
    if has_split_dirs:
      extra = sorted(set(_subdirs(os.path.join(root, "test"))) - set(self.classes))
      if extra:
        raise ValueError(f"{root}/test has classes {extra} that {root}/train lacks; every test "
                         "class needs a train folder of the same name, with images.")
      listings = {s: _Listing(os.path.join(root, s), self.classes) for s in ("train", "test")}
      files = {split: listing.files for split, listing in listings.items()}
    else:
      listings = {"": _Listing(root, self.classes)}
      all_files = listings[""].files
      files = {}
      if all_files:
        files = {s: [all_files[i] for i in sorted(idx)]
                 for s, idx in _split_indices(len(all_files), test_fraction).items()}
    if not any(files.values()):
      raise FileNotFoundError(
          f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}/<class>/: put each "
          "class's images in its own subdirectory.")
    empty = listings["train" if has_split_dirs else ""].empty  # A test split may lack a class.
    if empty:
      raise ValueError(
          f"Class folder {empty[0]} holds no readable images ({', '.join(IMAGE_EXTENSIONS)}): put "
          f"that class's images in it, or remove it (every subdirectory of {class_parent} is a "
          f"class){f'; {len(empty) - 1} more are empty' if len(empty) > 1 else ''}.")
    self.unreadable = sorted(path for listing in listings.values() for path in listing.unreadable)
    if self.unreadable:
      logging.warning("Image folder %s: %d entries named like images are not readable files "
                      "(dangling symlinks or directories); they are skipped and counted as "
                      "undecodable examples: %s", root, len(self.unreadable),
                      ", ".join(self.unreadable[:20]) + (" ..." if len(self.unreadable) > 20 else ""))
    # A fixed permutation mixes classes so that a small shuffle buffer still sees all of them.
    rng = np.random.default_rng(_SPLIT_SEED)
    self._files = {s: [f[i] for i in rng.permutation(len(f))] for s, f in files.items()}
    self._root = root

  def num_examples(self, split: str) -> int:
    return len(lookup_split(self._files, split, f"image folder {self._root}"))

  def class_names(self) -> List[str]:
    return list(self.classes)

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    files = lookup_split(self._files, split, f"image folder {self._root}")
    keys = [p for p, _ in files]
    labels = np.array([l for _, l in files], np.int32)
    ds = tf.data.Dataset.from_tensor_slices({"key": keys, "label": labels})
    ds = every_nth(ds, shard_index, shard_count, "")
    if not self.unreadable:
      return ds.map(lambda ex: {**ex, "image": tf.io.read_file(ex["key"])},
                    num_parallel_calls=tf.data.AUTOTUNE)
    # Unreadable entries read as empty bytes, which no decoder accepts: the pipeline skips and counts
    # them with the undecodable images.
    unreadable = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        self.unreadable, tf.ones(len(self.unreadable), tf.bool)), default_value=False)

    def load(ex):
      image = tf.cond(unreadable.lookup(ex["key"]), lambda: tf.constant(""),
                      lambda: tf.io.read_file(ex["key"]))
      return {**ex, "image": image}

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


@register_source("folder")
def folder_source(data_config: ml_collections.ConfigDict) -> Source:
  return FolderSource(data_config.root, test_fraction=data_config.test_fraction)


class TfdsSource(Source):
  """A TFDS dataset already prepared under data_dir (or downloaded first when download=True).

  Shard i of n is TFDS's i-th even sub-split, so a process reads only its own part of the files.
  Sliced split names ('train[:10%]') are TFDS's own.
  """
  slices_natively = True

  def __init__(self, name: str, data_dir=None, download: bool = False, label_key: str = "label"):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if not name:
      raise ValueError("config.data.name is empty: set it to a TFDS dataset name, e.g. 'cifar10'.")
    if name.split(":")[0].split("/")[0] == "imagenet21k":
      # Registers the builder, so TFDS finds its code (it can also read the prepared files alone).
      from vit_jax.data import imagenet21k  # noqa: F401  # pylint: disable=g-import-not-at-top
    data_dir = paths.expand(data_dir)
    self._builder = tfds.builder(name, data_dir=data_dir)  # Reads local files only.
    if not self._builder.is_prepared():
      where = self._builder.data_dir
      if not download:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r} (looked in {where}). "
            f"Prepare it on a machine with internet: `tfds build {name} --data_dir=DIR` and "
            "copy DIR here (then set config.data.data_dir=DIR), or set config.data.download=True.")
      self._builder.download_and_prepare()
    features = self._builder.info.features
    for key in ("image", label_key):
      if key not in features:
        raise ValueError(f"TFDS dataset {name!r} has no {key!r} feature (it has {list(features)}); "
                         "only image classification datasets are supported (see data.label_key).")
    label = features[label_key]
    self.multi_label = isinstance(label, tfds.features.Sequence)
    self._label = label.feature if self.multi_label else label
    self.num_classes = int(self._label.num_classes)
    self._name, self._label_key, self._tfds = name, label_key, tfds

  def class_names(self) -> List[str]:
    """The ClassLabel's names (TFDS gives the ids as names when the dataset defines none)."""
    return [str(name) for name in self._label.names]

  def _subsplits(self, split: str, shard_count: int):
    subsplits = self._tfds.even_splits(split, shard_count)
    sizes = [int(self._builder.info.splits[s].num_examples) for s in subsplits]
    return subsplits, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

  def num_examples(self, split: str) -> int:
    try:
      return int(self._builder.info.splits[split].num_examples)
    except (KeyError, ValueError):
      raise ValueError(f"TFDS dataset {self._name!r} has no split {split!r}; its splits are "
                       f"{sorted(self._builder.info.splits)} (slices like 'train[:1000]' work too)."
                       ) from None

  def shard_size(self, split: str, shard_index: int = 0, shard_count: int = 1) -> int:
    check_shard(shard_index, shard_count)
    _, offsets = self._subsplits(split, shard_count)
    return int(offsets[shard_index + 1] - offsets[shard_index])

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    check_shard(shard_index, shard_count)
    subsplits, offsets = self._subsplits(split, shard_count)
    ds = self._builder.as_dataset(
        split=subsplits[shard_index], shuffle_files=False,
        decoders={"image": self._tfds.decode.SkipDecoding()},
        read_config=self._tfds.ReadConfig(add_tfds_id=True))
    label_out = "labels" if self.multi_label else "label"

    def convert(i, example):
      return {"image": example["image"], label_out: tf.cast(example[self._label_key], tf.int32),
              "index": offsets[shard_index] + i, "key": example["tfds_id"]}

    return ds.enumerate().map(convert)

  def files(self, split: str, shard_index: int = 0, shard_count: int = 1) -> List[str]:
    base = split.split("[")[0]
    return [os.fspath(p) for p in self._builder.info.splits[base].filepaths]


@register_source("tfds")
def tfds_source(data_config: ml_collections.ConfigDict) -> Source:
  return TfdsSource(data_config.name, data_dir=data_config.data_dir,
                    download=data_config.download, label_key=data_config.label_key)
