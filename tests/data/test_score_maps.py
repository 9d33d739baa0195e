"""Specification of stored score maps: sharded by the source's shards, keyed by example, written
atomically so that an interrupted annotator resumes to the same result, and refused (named) when
made for other data, incomplete or damaged."""
import dataclasses
import json
import os

import numpy as np
import pytest

from vit_jax.data import batch_keys, score_maps

MANIFEST = score_maps.Manifest(source="digits", split="train", num_classes=10, top_k=3, grid=(4, 4),
                               examples=7, shards=3, teacher="workdir/default/pretrain")


def shard_of(shard, shards=3, examples=7, seed=0):
  """The keys and maps of examples shard, shard + shards, ... (a Source's shard)."""
  rows = list(range(shard, examples, shards))
  rng = np.random.default_rng(seed + shard)
  values = rng.normal(size=(len(rows), 3, 4, 4)).astype(np.float32)
  indices = rng.integers(0, 10, size=(len(rows), 3, 4, 4))
  return [f"digits/train#{i}" for i in rows], values, indices


def write_all(directory, shards=range(3)):
  score_maps.start(str(directory), MANIFEST)
  for s in shards:
    if not score_maps.is_written(str(directory), s, 3):
      score_maps.write_shard(str(directory), MANIFEST, s, *shard_of(s))


def test_maps_are_looked_up_by_example_key_in_float16_with_compact_class_ids(tmp_path):
  write_all(tmp_path)
  maps = score_maps.load(str(tmp_path), MANIFEST)
  keys, values, indices = shard_of(1)
  got_values, got_indices = maps.lookup([keys[1], keys[0]])
  np.testing.assert_array_equal(got_values, values[[1, 0]].astype(np.float16))
  np.testing.assert_array_equal(got_indices, indices[[1, 0]])
  assert got_values.dtype == np.float16 and got_indices.dtype == np.int16
  assert sorted(os.listdir(tmp_path)) == ["manifest.json"] + [
      f"shard-0000{s}-of-00003.npz" for s in range(3)]


def test_an_interrupted_run_resumes_to_the_same_maps(tmp_path):
  write_all(tmp_path / "straight")
  write_all(tmp_path / "resumed", shards=[2])  # killed after one shard
  open(tmp_path / "resumed" / "shard-00000-of-00003.npz.tmp-123", "wb").write(b"half a file")
  with pytest.raises(score_maps.ScoreMapError, match="lacks 2 of 3 shards"):
    score_maps.load(str(tmp_path / "resumed"))
  write_all(tmp_path / "resumed")  # the rerun writes the missing ones
  straight, resumed = (score_maps.load(str(tmp_path / name)) for name in ("straight", "resumed"))
  assert straight.rows == resumed.rows
  np.testing.assert_array_equal(straight.values, resumed.values)
  np.testing.assert_array_equal(straight.indices, resumed.indices)


@pytest.mark.parametrize("change, named", [
    (dict(split="test"), "split 'train' .wanted 'test'."),
    (dict(num_classes=100), "num_classes 10 .wanted 100."),
    (dict(source="folder"), "source 'digits' .wanted 'folder'."),
    (dict(examples=8), "examples 7 .wanted 8.")])
def test_maps_made_for_other_data_are_refused_naming_the_difference(tmp_path, change, named):
  write_all(tmp_path)
  with pytest.raises(score_maps.ScoreMapError, match=f"made for other data: {named}"):
    score_maps.load(str(tmp_path), dataclasses.replace(MANIFEST, **change))
  with pytest.raises(score_maps.ScoreMapError, match=named):  # nor can a rerun mix two settings
    score_maps.start(str(tmp_path), dataclasses.replace(MANIFEST, **change))


def test_an_example_without_a_map_is_an_error_naming_it(tmp_path):
  write_all(tmp_path)
  with pytest.raises(score_maps.ScoreMapError, match="no score map for example 'digits/train#9'"):
    score_maps.load(str(tmp_path)).lookup(["digits/train#1", "digits/train#9"])


def test_a_damaged_shard_is_reported_with_its_file(tmp_path):
  write_all(tmp_path)
  damaged = tmp_path / "shard-00001-of-00003.npz"
  damaged.write_bytes(damaged.read_bytes()[:100])
  with pytest.raises(score_maps.ScoreMapError, match=f"shard {damaged} is damaged"):
    score_maps.load(str(tmp_path))


def test_a_directory_without_maps_or_with_a_broken_manifest_says_so(tmp_path):
  with pytest.raises(score_maps.ScoreMapError, match="holds no score maps"):
    score_maps.load(str(tmp_path))
  (tmp_path / "manifest.json").write_text(json.dumps({"source": "digits"}))
  with pytest.raises(score_maps.ScoreMapError, match="is not a score-map manifest"):
    score_maps.load(str(tmp_path))


def test_many_classes_keep_int32_ids():
  assert dataclasses.replace(MANIFEST, num_classes=21843).index_dtype() == np.int16
  assert dataclasses.replace(MANIFEST, num_classes=40000).index_dtype() == np.int32


def test_a_train_batch_is_joined_with_its_maps_mirrored_with_its_images(tmp_path):
  """A mirrored image takes its map mirrored (W axis) and its box described in the mirrored source:
  the convention of the official code, which flips the source and its map before cropping."""
  write_all(tmp_path)
  maps = score_maps.load(str(tmp_path))
  keys = [b"digits/train#5", b"digits/train#0"]
  box = np.array([[0.1, 0.2, 0.5, 0.3]] * 2, np.float32)
  batch = {"image": np.zeros((2, 4, 4, 3)), "label": np.array([5, 0]),
           score_maps.EXAMPLE_KEY: np.array(keys, object), batch_keys.BOX: box,
           batch_keys.FLIPPED: np.array([True, False])}
  joined = score_maps.join(batch, maps)
  assert set(joined) == {"image", "label", score_maps.SCORE_VALUES, score_maps.SCORE_INDICES,
                         score_maps.CROP}
  values, indices = maps.lookup(["digits/train#5", "digits/train#0"])
  np.testing.assert_array_equal(joined[score_maps.SCORE_VALUES][0], values[0][..., ::-1])
  np.testing.assert_array_equal(joined[score_maps.SCORE_INDICES][0], indices[0][..., ::-1])
  np.testing.assert_array_equal(joined[score_maps.SCORE_VALUES][1], values[1])
  np.testing.assert_allclose(joined[score_maps.CROP], [[0.1, 0.5, 0.5, 0.3], [0.1, 0.2, 0.5, 0.3]])


def test_joining_an_example_without_a_map_is_an_error_naming_it(tmp_path):
  write_all(tmp_path)
  batch = {score_maps.EXAMPLE_KEY: np.array([b"digits/train#9"], object),
           batch_keys.BOX: np.zeros((1, 4), np.float32), batch_keys.FLIPPED: np.zeros(1, bool)}
  with pytest.raises(score_maps.ScoreMapError, match="no score map for example 'digits/train#9'"):
    score_maps.join(batch, score_maps.load(str(tmp_path)))


def test_flip_first_crop_mirrors_the_box_of_mirrored_images():
  box = np.array([[0.1, 0.2, 0.5, 0.3], [0.1, 0.2, 0.5, 0.3]])
  np.testing.assert_allclose(score_maps.flip_first_crop(box, [False, True]),
                             [[0.1, 0.2, 0.5, 0.3], [0.1, 0.5, 0.5, 0.3]])
