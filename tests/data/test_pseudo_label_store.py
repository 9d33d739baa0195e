"""Specification of the pseudo-label store: a directory serves only what its manifest says, is read
whole or refused naming what is missing or damaged, and never mixes two requests."""
import dataclasses
import json

import numpy as np
import pytest

from vit_jax.data import pseudo_label_store as store
from vit_jax.data.pseudo_label_store import Counts, Manifest, PseudoLabelError

MANIFEST = Manifest(source="digits", split="train[10%:]", num_classes=3, examples=4, shards=2,
                    teacher="/runs/teacher", mode="soft", threshold=0.3, per_class=0)
COUNTS = Counts(examples=4, confident=3, kept=2, rows=3, per_class=(2, 1, 0), empty_classes=(2,))


def _finished(directory, manifest=MANIFEST, labels=None):
  store.start(directory, manifest)
  labels = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]]) if labels is None else labels
  return store.write_labels(directory, manifest, ["a", "b"], labels, np.array([2, 1]), COUNTS)


def test_shards_round_trip_in_shard_order_as_float16(tmp_path):
  store.start(tmp_path, MANIFEST)
  store.write_shard(tmp_path, MANIFEST, 1, ["c", "d"], np.array([[1, 0, 0], [0.2, 0.3, 0.5]]))
  assert not store.is_written(tmp_path, 0, 2)
  with pytest.raises(PseudoLabelError, match="lacks 1 of 2 shards .*shard-00000-of-00002.npz"):
    store.read_shards(tmp_path, MANIFEST)
  store.write_shard(tmp_path, MANIFEST, 0, ["a", "b"], np.full((2, 3), 1 / 3))
  keys, probabilities = store.read_shards(tmp_path, MANIFEST)
  assert keys.tolist() == ["a", "b", "c", "d"] and probabilities.dtype == np.float32
  np.testing.assert_array_equal(probabilities[3], np.float16([0.2, 0.3, 0.5]))
  assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temporary file is left
      "manifest.json", "shard-00000-of-00002.npz", "shard-00001-of-00002.npz"]


def test_a_damaged_shard_is_named(tmp_path):
  store.start(tmp_path, MANIFEST)
  for shard in range(2):
    store.write_shard(tmp_path, MANIFEST, shard, ["a"], np.ones((1, 3)))
  (tmp_path / store.shard_name(1, 2)).write_bytes(b"not a zip")
  with pytest.raises(PseudoLabelError, match="shard .*shard-00001-of-00002.npz is damaged"):
    store.read_shards(tmp_path, MANIFEST)


def test_soft_labels_load_as_normalised_distributions_with_their_copies(tmp_path):
  finished = _finished(tmp_path, labels=np.array([[0.5, 0.25, 0.3], [0.0, 1.0, 0.0]]))
  assert store.read_manifest(tmp_path) == finished and finished.counts == COUNTS
  labels = store.load(tmp_path)
  assert labels.keys.tolist() == ["a", "b"] and labels.copies.tolist() == [2, 1]
  assert labels.rows == 3
  np.testing.assert_allclose(labels.targets[0], np.float16([0.5, 0.25, 0.3]) / np.float16(1.05),
                             rtol=1e-3)
  np.testing.assert_allclose(labels.targets.sum(axis=1), 1.0, rtol=1e-6)


def test_hard_labels_load_as_one_hot_targets(tmp_path):
  hard = dataclasses.replace(MANIFEST, mode="hard")
  _finished(tmp_path, hard, labels=np.array([2, 0]))
  np.testing.assert_array_equal(store.load(tmp_path).targets, [[0, 0, 1], [1, 0, 0]])


def test_a_rerun_resumes_the_same_request_and_refuses_any_other(tmp_path):
  store.start(tmp_path, MANIFEST)
  assert store.start(tmp_path, MANIFEST) == MANIFEST  # resumed
  for field, value in (("teacher", "/runs/student_1"), ("threshold", 0.5), ("mode", "hard"),
                       ("per_class", 130), ("split", "train")):
    with pytest.raises(PseudoLabelError, match=f"made for something else: {field} "):
      store.start(tmp_path, dataclasses.replace(MANIFEST, **{field: value}))


def test_missing_unfinished_and_inconsistent_directories_are_refused(tmp_path):
  with pytest.raises(PseudoLabelError, match="holds no pseudo-labels .*vit_jax.pseudo_labels"):
    store.load(tmp_path / "nothing")
  store.start(tmp_path, MANIFEST)
  with pytest.raises(PseudoLabelError, match="has not finished .*rerun"):
    store.load(tmp_path)
  _finished(tmp_path)
  manifest = json.loads((tmp_path / store.MANIFEST).read_text())
  manifest["counts"]["rows"] = 7
  (tmp_path / store.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(PseudoLabelError, match="holds .* and 3 rows; its manifest says 3 classes and 7"):
    store.load(tmp_path)
  (tmp_path / store.MANIFEST).write_text("{")
  with pytest.raises(PseudoLabelError, match="is not a pseudo-label manifest"):
    store.load(tmp_path)
