"""Specification of the ImageNet-21k builder on a miniature release with the official layout."""
import contextlib
import io
import itertools
import os
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from vit_jax import configuration
from vit_jax.data import imagenet21k, pipeline, preprocess, sources

# Synset -> colour of its images; written in unsorted order, labelled in sorted order.
COLOURS = {"n00000003": (200, 40, 40), "n00000001": (40, 200, 40), "n00000002": (40, 40, 200),
           "n00000004": (200, 200, 40)}


def _image_bytes(colour, fmt="JPEG", mode=None):
  image = Image.fromarray(np.full((12, 16, 3), colour, np.uint8))
  if mode:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, fmt, quality=95)
  return out.getvalue()


def _write_tar(path, members):
  """A tar of members {name: bytes}, or [(name, bytes), ...] (where a name may repeat)."""
  with tarfile.open(path, "w") as archive:
    for name, data in (members.items() if isinstance(members, dict) else members):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))


def _truncate_in_second_member(path):
  with tarfile.open(path) as archive:
    second = archive.getmembers()[1]
  data = path.read_bytes()
  path.write_bytes(data[:second.offset_data + second.size // 2])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """manual_dir/winter21_whole/n*.tar: 4 synsets, 3 images each, 3 of them awkward; n00000003.tar
  repeats a name and n00000004.tar is cut in the middle of its second image."""
  manual_dir = tmp_path_factory.mktemp("i21k_manual")
  tar_dir = manual_dir / "winter21_whole"  # The winter21 archive unpacks into a subdirectory.
  os.makedirs(tar_dir)
  for synset, colour in COLOURS.items():
    members = {f"{synset}_{i}.JPEG": _image_bytes(colour) for i in range(3)}
    if synset == "n00000001":
      members[f"{synset}_1.JPEG"] = _image_bytes(colour)[:150]  # Truncated: corrupt.
    if synset == "n00000002":
      members[f"{synset}_1.JPEG"] = _image_bytes(colour, "PNG")  # A PNG under a JPEG name.
      members[f"{synset}_2.JPEG"] = _image_bytes(colour, "JPEG", "CMYK")
    if synset == "n00000003":
      members = [*members.items(), (f"{synset}_0.JPEG", _image_bytes(colour))]
    _write_tar(tar_dir / f"{synset}.tar", members)
  _truncate_in_second_member(tar_dir / "n00000004.tar")
  (tar_dir / "README.txt").write_text("not a synset")
  return str(manual_dir)


@pytest.fixture(scope="module")
def built(release, tmp_path_factory):
  """(data_dir, what the command printed)."""
  data_dir = str(tmp_path_factory.mktemp("i21k_tfds"))
  tfds.disable_progress_bar()
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    imagenet21k.main([f"--manual_dir={release}", f"--data_dir={data_dir}", "--config=winter21"])
  return data_dir, out.getvalue()


@pytest.fixture(scope="module")
def data_dir(built):
  return built[0]


def test_labels_are_the_sorted_synsets_and_the_count_comes_from_the_data(data_dir):
  builder = tfds.builder("imagenet21k/winter21", data_dir=data_dir)
  label = builder.info.features["label"]
  assert label.num_classes == 4 and label.names == sorted(COLOURS)
  # 9 images of whole tars (1 corrupt, 1 repeated name), 1 before the break of n00000004.tar.
  assert builder.info.splits["train"].num_examples == 9


def test_corrupt_images_are_skipped_and_listed_and_awkward_ones_become_rgb_jpegs(data_dir):
  builder = tfds.builder("imagenet21k/winter21", data_dir=data_dir)
  skipped = builder.info.metadata["skipped"]
  assert len(skipped) == 1 and skipped[0].startswith("n00000001.tar/n00000001_1.JPEG: ")
  assert builder.info.metadata["reencoded"] == 2  # The PNG and the CMYK JPEG.
  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  names = set()
  for ex in ds.as_numpy_iterator():
    synset = ex["file_name"].decode().split(".tar/")[0]
    names.add(ex["file_name"].decode())
    assert ex["label"] == sorted(COLOURS).index(synset)  # Label from the synset, never guessed.
    assert ex["image"][:2] == b"\xff\xd8"  # Every stored image is a JPEG...
    image = preprocess.decode(ex["image"]).numpy()
    assert image.shape == (12, 16, 3)
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), COLOURS[synset], atol=3)  # ...in RGB.
  assert "n00000002.tar/n00000002_2.JPEG" in names and len(names) == 9


def test_the_dataset_is_a_tfds_source_for_the_pipeline(data_dir):
  config = configuration.data_config()
  config.update(source="tfds", name="imagenet21k/winter21", data_dir=data_dir,
                test_split="train[:4]", train_split="train[4:]")
  source = sources.get_source(config)
  assert source.num_classes == 4 and source.num_examples("train[4:]") == 5
  (batch,) = itertools.islice(pipeline.train_batches(config, batch_size=4, image_size=8, seed=0), 1)
  assert batch["image"].shape == (4, 8, 8, 3) and batch["label"].shape == (4,)


def test_a_truncated_tar_keeps_the_files_before_the_break_and_is_named(built):
  data_dir, printed = built
  builder = tfds.builder("imagenet21k/winter21", data_dir=data_dir)
  (broken,) = builder.info.metadata["broken_tars"]
  assert broken.startswith("n00000004.tar cannot be read past its first 1 files (ReadError: ")
  assert "1 synset tars read only in part\n  n00000004.tar cannot be read" in printed
  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  names = {ex["file_name"].decode() for ex in ds.as_numpy_iterator()}
  assert {n for n in names if n.startswith("n00000004")} == {"n00000004.tar/n00000004_0.JPEG"}


def test_a_repeated_member_name_is_kept_once_and_named_with_its_tar(built):
  data_dir, printed = built
  builder = tfds.builder("imagenet21k/winter21", data_dir=data_dir)
  assert builder.info.metadata["duplicates"] == ["n00000003.tar/n00000003_0.JPEG"]
  assert "1 duplicate names" in printed


def test_strict_stops_at_a_truncated_tar_naming_it(tmp_path, monkeypatch):
  manual_dir = tmp_path / "tars"
  manual_dir.mkdir()
  _write_tar(manual_dir / "n00000001.tar", {"a.JPEG": _image_bytes((1, 2, 3))})
  _write_tar(manual_dir / "n00000002.tar", {f"{i}.JPEG": _image_bytes((1, 2, 3)) for i in range(2)})
  _truncate_in_second_member(manual_dir / "n00000002.tar")
  monkeypatch.setenv("HOME", str(tmp_path))  # `~` in the path flags means HOME...
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit, match="n00000002.tar cannot be read past its first 1 files"):
    imagenet21k.main(["--manual_dir=~/tars", "--data_dir=~/tfds", "--config=winter21", "--strict"])
  assert not (tmp_path / "~").exists()  # ...not a directory named '~'.


def test_a_manual_dir_without_synset_tars_says_what_to_put_there(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)No synset tars.*fall11_whole.tar"):
    imagenet21k.find_synset_tars(str(tmp_path))
