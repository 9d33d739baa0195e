"""Specification of the sources: sizes, classes, splits, sharding, decoding and clear errors."""
import os
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import configuration
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources


def _config(**overrides):
  config = configuration.data_config()
  config.update(overrides)
  return config


def _examples(ds):
  """The examples of a source's dataset as numpy, with encoded images decoded (as decode does)."""
  ds = ds.map(lambda ex: {**ex, "image": preprocess.decode(ex["image"])})
  return [{k: np.asarray(v) for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def _key(ex):
  return (ex["image"].tobytes(), int(ex["label"]))


# ----------------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
  return sources.get_source(_config(source="digits"))


def test_default_config_names_every_key_and_rejects_typos():
  config = configuration.data_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.sorce = "tfds"
  config.data_dir = "/some/dir"  # A None default still accepts a path.


def test_digits_has_10_classes_and_1797_images_split_80_20(digits):
  assert digits.num_classes == 10
  assert digits.class_names() == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]  # the default
  assert digits.num_examples("train") == 1438
  assert digits.num_examples("test") == 359


def test_digits_images_are_uint8_rgb_8x8_scaled_to_0_255(digits):
  examples = _examples(digits.read("train"))
  assert len(examples) == 1438
  images = np.stack([ex["image"] for ex in examples])
  assert images.shape == (1438, 8, 8, 3) and images.dtype == np.uint8
  assert images.min() == 0 and images.max() == 255
  np.testing.assert_array_equal(images[..., 0], images[..., 2])  # Gray replicated to 3 channels.
  labels = np.array([ex["label"] for ex in examples])
  assert labels.dtype == np.int32 and set(labels.tolist()) == set(range(10))


def test_digits_train_and_test_partition_the_dataset(digits):
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  full = load_digits()
  gray = np.round(full.images * (255 / 16)).astype(np.uint8)
  expected = sorted((np.repeat(g[..., None], 3, -1).tobytes(), int(l))
                    for g, l in zip(gray, full.target))
  train = [_key(ex) for ex in _examples(digits.read("train"))]
  test = [_key(ex) for ex in _examples(digits.read("test"))]
  assert sorted(train + test) == expected  # Disjoint and covering (as multisets).


def test_digits_order_is_deterministic_across_instances(digits):
  again = sources.get_source(_config(source="digits"))
  a = [_key(ex) for ex in _examples(digits.read("test"))]
  b = [_key(ex) for ex in _examples(again.read("test"))]
  assert a == b


def test_shard_i_of_n_holds_every_nth_example(digits):
  full = [_key(ex) for ex in _examples(digits.read("test"))]
  for i in range(3):
    shard = [_key(ex) for ex in _examples(digits.read("test", shard_index=i, shard_count=3))]
    assert shard == full[i::3]


def test_examples_carry_their_position_in_the_split_and_a_key(digits):
  full = _examples(digits.read("test"))
  assert [int(ex["index"]) for ex in full] == list(range(359))
  assert full[5]["key"] == b"digits/test#5"
  shard = _examples(digits.read("test", shard_index=1, shard_count=3))
  assert [int(ex["index"]) for ex in shard] == list(range(1, 359, 3))
  assert digits.shard_size("test", 1, 3) == len(shard) == 120


def test_a_new_source_is_one_registered_function():
  @sources.register_source("test_constant")
  def constant(data_config):
    del data_config
    images = np.full((6, 2, 2, 3), 9, np.uint8)
    return sources.ArraySource("constant", images, np.arange(6) % 2, 2,
                               {"train": np.arange(4), "test": np.arange(4, 6)})

  assert "test_constant" in sources.available_sources()
  source = sources.get_source(_config(source="test_constant"))
  assert source.num_examples("train") == 4 and source.num_classes == 2
  assert [int(ex["label"]) for ex in _examples(source.read("test"))] == [0, 1]


def test_unknown_split_and_source_are_clear_errors(digits):
  with pytest.raises(ValueError, match="no split 'validation'"):
    digits.num_examples("validation")
  unregistered = "config.data.source='mnist' is not a registered data source; choose one of .*digits"
  with pytest.raises(ValueError, match=unregistered):
    sources.get_source(_config(source="mnist"))


# ----------------------------------------------------------------------------- folder

def _write(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _make_folder(root, with_split_dirs=False):
  """cat: 3 RGB PNGs, dog: 2 JPEGs and a grayscale PNG; plus a non-image file that is ignored."""
  rng = np.random.default_rng(0)
  splits = ("train", "test") if with_split_dirs else ("",)
  for split in splits:
    base = os.path.join(root, split)
    for i in range(3):
      _write(os.path.join(base, "cat", f"{i}.png"), rng.integers(0, 256, (5, 7, 3), np.uint8))
    for i in range(2):
      _write(os.path.join(base, "dog", f"{i}.jpg"), rng.integers(0, 256, (6, 4, 3), np.uint8))
    _write(os.path.join(base, "dog", "gray.PNG"), np.full((3, 3), 77, np.uint8))
    with open(os.path.join(base, "dog", "notes.txt"), "w") as f:
      f.write("not an image")


def test_folder_classes_are_sorted_subdirectories_and_images_decode_to_rgb(tmp_path):
  _make_folder(str(tmp_path))
  source = sources.get_source(_config(source="folder", root=str(tmp_path), test_fraction=0.5))
  assert source.num_classes == 2 and source.classes == ["cat", "dog"]
  assert source.class_names() == ["cat", "dog"]
  assert sources.get_source(_config(source="folder", root=str(tmp_path), test_fraction=0.5,
                                    test_split="test[:1]")).class_names() == ["cat", "dog"]
  assert source.num_examples("train") + source.num_examples("test") == 6
  examples = _examples(source.read("train")) + _examples(source.read("test"))
  assert sorted(ex["label"] for ex in examples) == [0, 0, 0, 1, 1, 1]
  shapes = sorted((int(ex["label"]),) + ex["image"].shape for ex in examples)
  assert shapes == [(0, 5, 7, 3)] * 3 + [(1, 3, 3, 3)] + [(1, 6, 4, 3)] * 2
  assert all(ex["image"].dtype == np.uint8 for ex in examples)
  (gray,) = [ex["image"] for ex in examples if ex["image"].shape == (3, 3, 3)]
  np.testing.assert_array_equal(gray, np.full((3, 3, 3), 77, np.uint8))  # Gray -> 3 channels.


def test_folder_png_pixels_round_trip_exactly(tmp_path):
  image = np.random.default_rng(1).integers(0, 256, (4, 6, 3), np.uint8)
  _write(str(tmp_path / "only" / "a.png"), image)
  _write(str(tmp_path / "only" / "b.png"), image)
  source = sources.get_source(_config(source="folder", root=str(tmp_path), test_fraction=0.5))
  for split in ("train", "test"):
    (ex,) = _examples(source.read(split))
    np.testing.assert_array_equal(ex["image"], image)


def test_folder_uses_train_and_test_subfolders_as_splits(tmp_path):
  _make_folder(str(tmp_path), with_split_dirs=True)
  source = sources.get_source(_config(source="folder", root=str(tmp_path)))
  assert source.classes == ["cat", "dog"]
  assert source.num_examples("train") == 6 and source.num_examples("test") == 6
  assert len(_examples(source.read("test", shard_index=1, shard_count=2))) == 3


def test_folder_examples_are_keyed_by_their_path_and_read_as_encoded_bytes(tmp_path):
  _make_folder(str(tmp_path))
  source = sources.get_source(_config(source="folder", root=str(tmp_path), test_fraction=0.5))
  (first, *_) = source.read("train").as_numpy_iterator()
  assert isinstance(first["image"], bytes)  # Encoded: decoding is the pipeline's first op.
  assert os.path.isfile(first["key"].decode())
  with open(first["key"].decode(), "rb") as f:
    assert f.read() == first["image"]


def test_folder_missing_or_empty_root_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.get_source(_config(source="folder", root=str(tmp_path / "nope")))
  os.makedirs(tmp_path / "cat")
  with pytest.raises(FileNotFoundError, match="No images"):
    sources.get_source(_config(source="folder", root=str(tmp_path)))


def test_a_class_folder_without_images_is_an_error_naming_it(tmp_path):
  _make_folder(str(tmp_path))
  os.makedirs(tmp_path / "emu")
  (tmp_path / "emu" / "notes.txt").write_text("no images here")
  with pytest.raises(ValueError, match=f"Class folder {tmp_path}/emu holds no readable images"):
    sources.get_source(_config(source="folder", root=str(tmp_path)))


def test_with_split_folders_only_a_train_class_folder_must_hold_images(tmp_path):
  _make_folder(str(tmp_path), with_split_dirs=True)
  for name in os.listdir(tmp_path / "test" / "cat"):
    os.remove(tmp_path / "test" / "cat" / name)  # An empty test class folder...
  os.rmdir(tmp_path / "test" / "cat")  # ...or none at all are fine:
  source = sources.get_source(_config(source="folder", root=str(tmp_path)))
  assert source.classes == ["cat", "dog"] and source.num_examples("test") == 3
  os.makedirs(tmp_path / "train" / "emu")
  with pytest.raises(ValueError, match=f"Class folder {tmp_path}/train/emu holds no readable"):
    sources.get_source(_config(source="folder", root=str(tmp_path)))


def test_dangling_links_and_directories_named_like_images_are_skipped_and_counted(tmp_path, caplog):
  _make_folder(str(tmp_path), with_split_dirs=True)
  os.symlink(tmp_path / "gone.png", tmp_path / "train" / "cat" / "link.png")
  os.makedirs(tmp_path / "train" / "dog" / "folder.jpg")
  with caplog.at_level("WARNING"):
    source = sources.get_source(_config(source="folder", root=str(tmp_path)))
  bad = [str(tmp_path / "train" / "cat" / "link.png"), str(tmp_path / "train" / "dog" / "folder.jpg")]
  assert source.unreadable == bad and source.num_examples("train") == 8
  (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert "2 entries named like images are not readable files" in warning and bad[1] in warning
  config = _config(source="folder", root=str(tmp_path), pp_eval="decode|resize(4)")
  evaluation = pipeline.eval_batches(config, source=source, split="train", batch_size=4, image_size=4)
  assert sum(int(b["mask"].sum()) for b in evaluation) == 6  # The readable images, each once.
  assert evaluation.skipped == 2 and sorted(evaluation.skipped_keys) == bad


# ----------------------------------------------------------------------------- tfds

class VitJaxTinyGray(tfds.core.GeneratorBasedBuilder):
  """A 13-image grayscale TFDS dataset, prepared offline inside the test."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(6, 5, 1)),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(9), "test": self._generate_examples(4)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((6, 5, 1), 20 * i, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.disable_progress_bar()
  VitJaxTinyGray(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_reads_a_prepared_dataset_as_rgb_uint8(tiny_tfds_dir):
  source = sources.get_source(_config(source="tfds", name="vit_jax_tiny_gray",
                                      data_dir=tiny_tfds_dir))
  assert source.num_classes == 3 and source.class_names() == ["0", "1", "2"]  # ClassLabel's names
  assert source.num_examples("train") == 9 and source.num_examples("test") == 4
  examples = _examples(source.read("train"))
  assert len(examples) == 9
  for ex in examples:
    assert ex["image"].shape == (6, 5, 3) and ex["image"].dtype == np.uint8
    assert ex["label"].dtype == np.int32
  # Generated image i is filled with 20 * i and labelled i % 3: order and values survive.
  values = sorted(int(ex["image"][0, 0, 0]) for ex in examples)
  assert values == [20 * i for i in range(9)]
  assert all(int(ex["label"]) == int(ex["image"][0, 0, 0]) // 20 % 3 for ex in examples)


def test_tfds_shards_are_contiguous_parts_that_cover_the_split(tiny_tfds_dir):
  source = sources.get_source(_config(source="tfds", name="vit_jax_tiny_gray",
                                      data_dir=tiny_tfds_dir))
  full = _examples(source.read("train"))
  assert [int(ex["index"]) for ex in full] == list(range(9))
  assert all(ex["key"].item().startswith(b"vit_jax_tiny_gray-train.tfrecord") for ex in full)
  shards = [_examples(source.read("train", i, 2)) for i in range(2)]
  assert [_key(ex) for ex in shards[0] + shards[1]] == [_key(ex) for ex in full]
  assert [int(ex["index"]) for ex in shards[1]] == list(range(len(shards[0]), 9))
  assert [source.shard_size("train", i, 2) for i in range(2)] == [len(s) for s in shards]
  assert source.files("train") and all(os.path.isfile(f) for f in source.files("train"))


def test_tfds_split_slices_work_as_splits(tiny_tfds_dir):
  source = sources.get_source(_config(source="tfds", name="vit_jax_tiny_gray",
                                      data_dir=tiny_tfds_dir))
  assert source.num_examples("train[2:]") == 7
  assert len(_examples(source.read("train[2:]", 1, 2))) == source.shard_size("train[2:]", 1, 2)
  with pytest.raises(ValueError, match="no split 'validation'"):
    source.num_examples("validation")


def test_tfds_unprepared_dataset_fails_fast_saying_how_to_prepare_it(tmp_path):
  start = time.time()
  with pytest.raises(FileNotFoundError) as error:
    sources.get_source(_config(source="tfds", name="mnist", data_dir=str(tmp_path)))
  assert time.time() - start < 5.0  # Never the ~205 s offline download retry.
  message = str(error.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert "tfds build mnist" in message and "download=True" in message


def test_tensorflow_sees_no_gpu():
  assert not tf.config.get_visible_devices("GPU")
