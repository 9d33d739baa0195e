"""Where examples come from: one small class per source behind the `Source` interface.

Every source yields decoded examples `{'image': uint8 (H, W, 3), 'label': int32 ()}` in a fixed
order (shuffling belongs to the pipeline), and shards with `ds.shard`, so shard i of n holds the
examples at positions i, i + n, i + 2n, ... of that order.
"""
import abc
import os
from typing import Dict, List, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow as tf

SOURCES = ("digits", "tfds", "folder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SPLIT_SEED = 0  # Fixed seed of the train/test permutation for sources without their own splits.


def hide_gpus_from_tensorflow() -> None:
  """Keeps TensorFlow (used only for tf.data) off the GPUs, which belong to JAX."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass  # The TF runtime is already initialized (devices then stay as they are) or has no GPUs.


hide_gpus_from_tensorflow()


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config with every key a source or the pipeline reads (lockable)."""
  return ml_collections.ConfigDict({
      "source": "digits",   # One of SOURCES.
      "name": "",           # TFDS dataset name, e.g. 'cifar10' or 'imagenet2012:5.1.0'.
      "data_dir": ml_collections.config_dict.placeholder(str),  # TFDS data_dir; None: TFDS default.
      "download": False,    # TFDS only: download and prepare when not prepared (needs internet).
      "root": "",           # Image folder: root/<class>/*.jpg|png or root/{train,test}/<class>/.
      "train_split": "train",
      "test_split": "test",
      "test_fraction": 0.2,  # Held-out fraction for digits and folders without split subfolders.
      "shuffle_buffer": 10_000,  # Train shuffle buffer (decoded examples) per process.
      "threads": 1,         # tf.data private thread pool size: keep small so XLA keeps the cores.
      "prefetch": 2,        # Batches prefetched by tf.data.
  })


class Source(abc.ABC):
  """A labelled image dataset with named splits, read as a deterministic, shardable tf.data."""
  num_classes: int

  @abc.abstractmethod
  def num_examples(self, split: str) -> int:
    """Returns the number of examples in `split` (all shards together)."""

  @abc.abstractmethod
  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    """Returns shard `shard_index` of `shard_count` of `split`, in a fixed order, unbatched."""


def _check_shard(shard_index: int, shard_count: int) -> None:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must lie in [0, shard_count={shard_count}).")


def _split_indices(n: int, test_fraction: float) -> Dict[str, np.ndarray]:
  """Splits range(n) into 'train'/'test' by a fixed-seed permutation (same answer on every host)."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction={test_fraction} must lie strictly between 0 and 1.")
  perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
  num_test = max(1, int(round(n * test_fraction)))
  return {"train": perm[num_test:], "test": perm[:num_test]}


def _lookup_split(splits: Dict, split: str, what: str):
  if split not in splits:
    raise ValueError(f"{what} has no split {split!r}; its splits are {sorted(splits)}. "
                     "Set config.data.train_split / test_split to one of them.")
  return splits[split]


class DigitsSource(Source):
  """sklearn's bundled 8x8 handwritten digits (1797 images, 10 classes): needs no download."""
  num_classes = 10

  def __init__(self, test_fraction: float = 0.2):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # Values 0..16 -> 0..255.
    self._images = np.repeat(gray[..., None], 3, axis=-1)
    self._labels = digits.target.astype(np.int32)
    self._splits = _split_indices(len(self._labels), test_fraction)

  def num_examples(self, split: str) -> int:
    return len(_lookup_split(self._splits, split, "digits"))

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    _check_shard(shard_index, shard_count)
    idx = _lookup_split(self._splits, split, "digits")
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": self._images[idx], "label": self._labels[idx]})
    return ds.shard(shard_count, shard_index)


class TfdsSource(Source):
  """A TFDS dataset already prepared under data_dir (or downloaded first when download=True)."""

  def __init__(self, name: str, data_dir=None, download: bool = False):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if not name:
      raise ValueError("config.data.name is empty: set it to a TFDS dataset name, e.g. 'cifar10'.")
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
    for key in ("image", "label"):
      if key not in features:
        raise ValueError(f"TFDS dataset {name!r} has no {key!r} feature (it has {list(features)}); "
                         "only image classification datasets are supported.")
    self._name = name
    self._image_feature = features["image"]
    self.num_classes = int(features["label"].num_classes)

  def num_examples(self, split: str) -> int:
    return int(self._builder.info.splits[split].num_examples)

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    _check_shard(shard_index, shard_count)
    # Shard before decoding so each process decodes only its own images.
    ds = self._builder.as_dataset(
        split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(add_tfds_id=False))
    ds = ds.shard(shard_count, shard_index)

    def decode(example):
      image = self._image_feature.decode_example(example["image"])
      if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
      image = tf.ensure_shape(tf.cast(image, tf.uint8), [None, None, 3])
      return {"image": image, "label": tf.cast(example["label"], tf.int32)}

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _list_class_folder(folder: str, classes: Sequence[str]) -> List[Tuple[str, int]]:
  """Returns (path, label) for every image in folder/<class>/, sorted by class then file name."""
  files = []
  for label, name in enumerate(classes):
    class_dir = os.path.join(folder, name)
    if not os.path.isdir(class_dir):
      continue
    for fname in sorted(os.listdir(class_dir)):
      if fname.lower().endswith(IMAGE_EXTENSIONS):
        files.append((os.path.join(class_dir, fname), label))
  return files


def _subdirs(path: str) -> List[str]:
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


class FolderSource(Source):
  """Images in root/<class>/*.{jpg,jpeg,png}, or in root/{train,test}/<class>/ when those exist."""

  def __init__(self, root: str, test_fraction: float = 0.2):
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
                         "class needs a train folder of the same name (it may be empty).")
      files = {s: _list_class_folder(os.path.join(root, s), self.classes)
               for s in ("train", "test")}
    else:
      all_files = _list_class_folder(root, self.classes)
      if all_files:
        files = {s: [all_files[i] for i in sorted(idx)]
                 for s, idx in _split_indices(len(all_files), test_fraction).items()}
      else:
        files = {}
    if not any(files.values()):
      raise FileNotFoundError(
          f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}/<class>/: put each "
          "class's images in its own subdirectory.")
    # A fixed permutation mixes classes so that a small shuffle buffer still sees all of them.
    rng = np.random.default_rng(_SPLIT_SEED)
    self._files = {s: [f[i] for i in rng.permutation(len(f))] for s, f in files.items()}
    self._root = root

  def num_examples(self, split: str) -> int:
    return len(_lookup_split(self._files, split, f"image folder {self._root}"))

  def read(self, split: str, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
    _check_shard(shard_index, shard_count)
    files = _lookup_split(self._files, split, f"image folder {self._root}")
    paths = [p for p, _ in files]
    labels = np.array([l for _, l in files], np.int32)
    ds = tf.data.Dataset.from_tensor_slices({"path": paths, "label": labels})
    ds = ds.shard(shard_count, shard_index)

    def decode(example):
      image = tf.io.decode_image(tf.io.read_file(example["path"]), channels=3,
                                 expand_animations=False)
      return {"image": tf.ensure_shape(image, [None, None, 3]), "label": example["label"]}

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def get_source(data_config: ml_collections.ConfigDict) -> Source:
  """Builds the source named by data_config.source (see default_data_config for the keys)."""
  kind = data_config.source
  if kind == "digits":
    return DigitsSource(test_fraction=data_config.test_fraction)
  if kind == "tfds":
    return TfdsSource(data_config.name, data_dir=data_config.data_dir,
                      download=data_config.download)
  if kind == "folder":
    return FolderSource(data_config.root, test_fraction=data_config.test_fraction)
  raise ValueError(f"Unknown config.data.source {kind!r}: use one of {SOURCES}.")
