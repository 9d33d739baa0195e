"""Specification of JFT-like data: the writer command, the reader, per-host files, multi-hot batches."""
import io
import itertools
import json
import os

import numpy as np
from PIL import Image
import pytest

from vit_jax import configuration
from vit_jax.data import jft, jft_write, pipeline, preprocess, sources

NUM_IMAGES, NUM_CLASSES = 12, 6


def _png(value):
  out = io.BytesIO()
  Image.fromarray(np.full((5, 4, 3), value, np.uint8)).save(out, "PNG")
  return out.getvalue()


def _labels_of(i):
  return [i % NUM_CLASSES, (i * 7 + 1) % NUM_CLASSES][:1 + i % 2]  # One or two labels.


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """12 PNGs (image i is filled with 10 i), a corrupt file, a missing file; 4 train shards."""
  root = tmp_path_factory.mktemp("jft")
  images, out = root / "images", root / "out"
  os.makedirs(images / "sub")
  rows = ["image,labels"]
  for i in range(NUM_IMAGES):
    (images / "sub" / f"{i:02d}.png").write_bytes(_png(10 * i))
    rows.append(f"sub/{i:02d}.png,{' '.join(map(str, _labels_of(i)))}")
  (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  rows += ["corrupt.jpg,1", "missing.jpg,2"]
  (root / "labels.csv").write_text("\n".join(rows) + "\n")
  jft_write.main([f"--images={images}", f"--labels={root / 'labels.csv'}", f"--output={out}",
                  "--num_shards=4", f"--num_classes={NUM_CLASSES}"])
  return str(out)


def _examples(ds):
  return list(ds.as_numpy_iterator())


def test_writer_skips_unreadable_images_and_records_them(written):
  with open(os.path.join(written, jft.INFO_FILE)) as f:
    info = json.load(f)
  assert info["num_classes"] == NUM_CLASSES
  files = info["splits"]["train"]["files"]
  assert [f["name"] for f in files] == [f"train.tfrecord-0000{i}-of-00004" for i in range(4)]
  assert sum(f["num_examples"] for f in files) == NUM_IMAGES
  skipped = {s["file"]: s["reason"] for s in info["skipped"]["train"]}
  assert sorted(skipped) == ["corrupt.jpg", "missing.jpg"]
  assert skipped["corrupt.jpg"].startswith("undecodable")
  assert "unreadable file" in skipped["missing.jpg"]


def test_reader_gives_every_image_once_with_its_variable_length_labels(written):
  source = sources.get_source(_config(written))
  assert source.multi_label and source.num_classes == NUM_CLASSES
  assert source.class_names() == [str(i) for i in range(NUM_CLASSES)]  # none were written: the ids
  assert source.num_examples("train") == NUM_IMAGES
  examples = _examples(source.read("train"))
  assert sorted(int(ex["index"]) for ex in examples) == list(range(NUM_IMAGES))
  by_value = {}
  for ex in examples:
    image = preprocess.decode(ex["image"]).numpy()
    assert image.shape == (5, 4, 3)
    by_value[int(image[0, 0, 0]) // 10] = sorted(ex["labels"].tolist())
  assert by_value == {i: sorted(_labels_of(i)) for i in range(NUM_IMAGES)}
  assert examples[0]["key"].startswith(b"train.tfrecord-0000")


def _config(root, **overrides):
  config = configuration.data_config()
  config.update(source="jft", root=root, test_split="train", **overrides)
  return config


@pytest.mark.parametrize("processes", [2, 3, 5])
def test_process_shares_are_disjoint_and_cover_the_split(written, processes):
  source = sources.get_source(_config(written))
  shares = [[int(ex["index"]) for ex in _examples(source.read("train", i, processes))]
            for i in range(processes)]
  assert sorted(sum(shares, [])) == list(range(NUM_IMAGES))
  assert [len(s) for s in shares] == [source.shard_size("train", i, processes)
                                      for i in range(processes)]
  files = [set(source.files("train", i, processes)) for i in range(processes)]
  if processes <= 4:  # File-level: each process opens only its own shards.
    assert all(not a & b for a, b in itertools.combinations(files, 2))
  else:  # More processes than shards: everyone reads all files, keeps every n-th record.
    assert all(len(f) == 4 for f in files)


def test_train_batches_have_multi_hot_targets_and_eval_masks_padding(written):
  config = _config(written)
  (batch,) = itertools.islice(pipeline.train_batches(
      config, batch_size=4, image_size=8, seed=0), 1)
  assert batch["image"].shape == (4, 8, 8, 3)
  assert batch["label"].shape == (4, NUM_CLASSES) and batch["label"].dtype == np.float32
  assert set(batch["label"].sum(-1).tolist()) <= {1.0, 2.0}
  batches = list(pipeline.eval_batches(config, batch_size=8, image_size=8, process_index=1,
                                       process_count=2))
  assert sources.get_source(config).shard_size("train", 1, 2) == 6  # Shards 1 and 3.
  assert np.concatenate([b["mask"] for b in batches]).tolist() == [1] * 6 + [0] * 2


def test_class_names_written_with_the_data_name_the_classes(tmp_path):
  names = ["cat", "dog", "eel", "fox", "gnu", "hen"]
  jft.write_split(str(tmp_path), "train", [("a.png", _png(0), [1])], num_classes=NUM_CLASSES,
                  num_shards=1, class_names=names)
  assert sources.get_source(_config(str(tmp_path))).class_names() == names


def test_labels_outside_num_classes_are_an_error_naming_the_image(tmp_path):
  (tmp_path / "a.png").write_bytes(_png(1))
  (tmp_path / "labels.csv").write_text("image,labels\na.png,0 9\n")
  with pytest.raises(ValueError, match="a.png: labels \\[9\\] are outside"):
    jft_write.main([f"--images={tmp_path}", f"--labels={tmp_path / 'labels.csv'}",
                    f"--output={tmp_path / 'out'}", "--num_classes=5"])
  (tmp_path / "bad.csv").write_text("path,label\na.png,0\n")
  with pytest.raises(ValueError, match="header 'image,labels'"):
    jft_write.read_labels_csv(str(tmp_path / "bad.csv"))


def test_undecodable_records_are_skipped_counted_and_named(tmp_path):
  good = [(f"{i}.png", _png(i), [i % 3]) for i in range(7)]
  examples = good[:3] + [("bad.jpg", b"\xff\xd8 broken", [1])] + good[3:]
  jft.write_split(str(tmp_path), "train", examples, num_classes=3, num_shards=1)
  config = _config(str(tmp_path))
  batches = pipeline.train_batches(config, batch_size=4, image_size=4, seed=0,
                                   augment=configuration.data_config().augment)
  list(itertools.islice(batches, 2))  # One epoch: all 8 records.
  assert batches.skipped == 1 and batches.skipped_keys == ["train.tfrecord-00000-of-00001:3"]
  evaluation = pipeline.eval_batches(config, batch_size=4, image_size=4)
  masks = np.concatenate([b["mask"] for b in evaluation])
  assert masks.tolist() == [1, 1, 1, 0, 1, 1, 1, 1]  # Record 3 masked; the rest once each.
  assert evaluation.skipped_keys == ["train.tfrecord-00000-of-00001:3"]


def test_missing_or_corrupt_shards_fail_with_a_message_naming_the_file(tmp_path):
  jft.write_split(str(tmp_path), "train", [(f"{i}", _png(i), [0]) for i in range(8)],
                  num_classes=2, num_shards=2)
  shard = tmp_path / "train.tfrecord-00001-of-00002"
  data = shard.read_bytes()
  shard.write_bytes(data[:40] + b"\x00" * 16 + data[56:])  # Breaks a record's checksum.
  with pytest.raises(IOError, match="shard .*train.tfrecord-00001-of-00002 is unreadable"):
    list(pipeline.eval_batches(_config(str(tmp_path)), batch_size=4, image_size=4))
  shard.unlink()
  with pytest.raises(FileNotFoundError, match="lacks shard files \\['train.tfrecord-00001"):
    sources.get_source(_config(str(tmp_path)))
  with pytest.raises(FileNotFoundError, match="No jft_info.json"):
    sources.get_source(_config(str(tmp_path / "nowhere")))


def test_a_dataset_whose_images_are_all_unreadable_fails_clearly(tmp_path):
  jft.write_split(str(tmp_path), "train", [(f"{i}", b"junk", [0]) for i in range(8)],
                  num_classes=2, num_shards=1)
  config = _config(str(tmp_path))
  with pytest.raises(ValueError, match="all 4 examples of a batch failed to decode"):
    next(pipeline.train_batches(config, batch_size=4, image_size=4, seed=0))
  with pytest.raises(ValueError, match="none of its 8 examples could be decoded"):
    list(pipeline.eval_batches(config, batch_size=4, image_size=4))
  (tmp_path / "img.png").write_bytes(b"junk")
  (tmp_path / "labels.csv").write_text("image,labels\nimg.png,0\n")
  with pytest.raises(ValueError, match="None of the 1 images"):
    jft_write.main([f"--images={tmp_path}", f"--labels={tmp_path / 'labels.csv'}",
                    f"--output={tmp_path / 'out'}"])


def test_the_writer_expands_home_in_its_path_flags(tmp_path, monkeypatch):
  (tmp_path / "img.png").write_bytes(_png(7))
  (tmp_path / "labels.csv").write_text("image,labels\nimg.png,0\n")
  (tmp_path / "names.txt").write_text("zero\n")
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  jft_write.main(["--images=~", "--labels=~/labels.csv", "--output=~/jft", "--num_shards=1",
                  "--class_names=~/names.txt"])
  assert (tmp_path / "jft" / jft.INFO_FILE).is_file()
  assert not (tmp_path / "~").exists()  # Not a directory named '~'.
