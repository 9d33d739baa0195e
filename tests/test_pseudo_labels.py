"""Specification of the pseudo-labelling command: the teacher's noiseless distribution of every
unlabelled example, selected as asked; hosts share the shards and a rerun resumes to the same labels;
a teacher or a request that does not fit is refused naming the difference."""
import os
import pathlib

import jax
import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax.config_cli import load_config_file
from vit_jax.data import pipeline, pseudo_label_store, sources
from vit_jax.data.pseudo_label_selection import select
from vit_jax.pseudo_labels import label
from vit_jax.train.loop import setup

from .states import save_stand_in_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
UNLABELED = "train[-64:]"  # a small unlabelled split keeps the test short


def config_for(stage="teacher", model_name="ViT-micro/4", **data):
  config = load_config_file(str(ROOT / f"configs/noisy_student.py:{stage}"))
  config.unlock()
  config.model_name = model_name
  config.eval_batch_size = 32
  config.data.update({"unlabeled_split": UNLABELED, **data})
  return config.lock()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A workdir holding a ViT-micro/4 state for the digits (random weights, head included)."""
  return save_stand_in_run(config_for(), tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def soft_labels(teacher, tmp_path_factory):
  output = tmp_path_factory.mktemp("soft")
  done = label(config_for(), str(teacher), str(output), threshold=0.0, shards=2)
  return output, done


def test_every_unlabelled_example_gets_the_teachers_noiseless_distribution(teacher, soft_labels):
  output, done = soft_labels
  assert (done["written"], done["resumed"], done["skipped"]) == (2, 0, 0)
  assert (done["counts"].examples, done["counts"].kept, done["counts"].rows) == (64, 64, 64)
  labels = pseudo_label_store.load(str(output))
  assert labels.manifest.request() == pseudo_label_store.Manifest(
      source="digits", split=UNLABELED, num_classes=10, examples=64, shards=2,
      teacher=str(teacher), mode="soft", threshold=0.0, per_class=0)
  config = config_for()
  batch = next(pipeline.eval_batches(config.data, split=UNLABELED, batch_size=64, image_size=16,
                                     keys=True))
  model = setup(config, sources.get_source(config.data)).model
  logits = model.apply({"params": checkpoint.restore_params(teacher)}, batch["image"], train=False)
  rows = {key: row for row, key in enumerate(labels.keys)}
  got = labels.targets[[rows[key.decode()] for key in batch[pipeline.EXAMPLE_KEY]]]
  np.testing.assert_allclose(got, jax.nn.softmax(logits), atol=2e-3)  # float16 on disk
  assert sorted(rows) == sorted(f"digits/train#{i}" for i in range(1438 - 64, 1438))


def test_hard_labels_keep_what_the_selection_chooses_from_the_stored_probabilities(
    teacher, soft_labels, tmp_path):
  done = label(config_for(), str(teacher), str(tmp_path), mode="hard", threshold=0.2,
               per_class=8, shards=2)
  keys, probabilities = pseudo_label_store.read_shards(
      str(tmp_path), pseudo_label_store.read_manifest(str(tmp_path)))
  chosen = select(probabilities, 0.2, 8)
  assert done["counts"] == chosen.counts
  assert set(chosen.counts.per_class) <= {0, 8}
  labels = pseudo_label_store.load(str(tmp_path))
  assert labels.keys.tolist() == keys[chosen.rows].tolist()
  assert labels.copies.tolist() == chosen.copies.tolist()
  np.testing.assert_array_equal(labels.targets, np.eye(10)[probabilities[chosen.rows].argmax(1)])


def test_hosts_share_the_shards_and_an_interrupted_run_resumes_to_the_same_labels(
    teacher, soft_labels, tmp_path):
  """Host 0 was killed after its shard; host 1 writes its own, then host 0, rerun, selects."""
  output, _ = soft_labels
  shard_0 = pseudo_label_store.shard_name(0, 2)
  for name in (pseudo_label_store.MANIFEST, shard_0):
    (tmp_path / name).write_bytes((output / name).read_bytes())
  manifest = pseudo_label_store.read_manifest(str(tmp_path))
  (tmp_path / pseudo_label_store.MANIFEST).unlink()
  pseudo_label_store.write_manifest(str(tmp_path), manifest.request())  # unfinished, as killed
  host_1 = label(config_for(), str(teacher), str(tmp_path), threshold=0.0, shards=2,
                 process_index=1, process_count=2)
  assert (host_1["written"], host_1["counts"]) == (1, None)
  host_0 = label(config_for(), str(teacher), str(tmp_path), threshold=0.0, shards=2,
                 process_index=0, process_count=2)
  assert (host_0["written"], host_0["resumed"]) == (0, 1)
  assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(output))
  assert pseudo_label_store.read_manifest(str(tmp_path)) == pseudo_label_store.read_manifest(
      str(output))
  for name in os.listdir(output):
    if name.endswith(".npz"):
      with np.load(output / name) as want, np.load(tmp_path / name) as got:
        for key in want.files:
          np.testing.assert_array_equal(got[key], want[key])


def test_a_teacher_or_a_request_that_does_not_fit_is_refused(teacher, soft_labels, tmp_path):
  output, _ = soft_labels
  with pytest.raises(ValueError, match=r"is not a ViT-tiny/4 for 16 px images .*parameters differ"):
    label(config_for(model_name="ViT-tiny/4"), str(teacher), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="made for something else: threshold 0.0 \\(wanted 0.3\\)"):
    label(config_for(), str(teacher), str(output), threshold=0.3, shards=2)
  with pytest.raises(ValueError, match="config.data.unlabeled_split is empty"):
    label(config_for(unlabeled_split=""), str(teacher), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="shares 44 examples with config.data.train_split"):
    label(config_for(unlabeled_split="train[100:]"), str(teacher), str(tmp_path / "c"))


def test_the_shipped_student_is_the_teachers_vit_with_noise_on_the_same_data():
  teacher, student = (load_config_file(str(ROOT / f"configs/noisy_student.py:{stage}"))
                      for stage in ("teacher", "student"))
  assert student.model_name == teacher.model_name  # equal in size (the paper: equal or larger)
  assert (student.model.dropout_rate, student.model.stochastic_depth) == (0.1, 0.2)
  assert "randaug(2, 3)" in student.data.pp_train and "randaug" not in teacher.data.pp_train
  same = ("source", "train_split", "unlabeled_split", "test_split", "image_size", "pp_eval")
  assert [student.data[k] for k in same] == [teacher.data[k] for k in same]
  assert (teacher.data.train_split, teacher.data.unlabeled_split) == ("train[:10%]", "train[10%:]")
