"""Specification of the token-labeling annotator: every train example of the source gets the
teacher's top-k map, equal to the teacher's dense scores of its eval image; an interrupted run
resumes to the same maps; a teacher that is not the config's model is refused naming parameters."""
import os

import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax.data import pipeline, score_maps, sources
from vit_jax.models.dense_scores import dense_logits, top_k_maps
from vit_jax.token_labels import annotate
from vit_jax.train.loop import setup

from .states import digits_config, save_stand_in_run


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A workdir holding a ViT-micro/4 state for the digits (random weights, head included)."""
  return save_stand_in_run(digits_config(), tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def annotated(teacher, tmp_path_factory):
  output = tmp_path_factory.mktemp("maps")
  done = annotate(digits_config(), str(teacher), str(output), top_k=3, shards=4)
  return output, done


def test_every_train_example_gets_the_teachers_top_k_map_of_its_eval_image(teacher, annotated):
  output, done = annotated
  assert done == {"written": 4, "resumed": 0, "skipped": 0}
  config = digits_config()
  source = sources.get_source(config.data)
  maps = score_maps.load(str(output), score_maps.Manifest(
      source="digits", split="train", num_classes=10, top_k=3, grid=(4, 4),
      examples=source.num_examples("train"), shards=4))
  assert len(maps.rows) == source.num_examples("train") == 1438
  batch = next(pipeline.eval_batches(config.data, split="train", batch_size=8, image_size=16,
                                     keys=True))
  model = setup(config, source).model
  variables = {"params": checkpoint.restore_params(teacher)}
  want_values, want_indices = top_k_maps(dense_logits(model, variables, batch["image"]), 3)
  values, indices = maps.lookup([key.decode() for key in batch[pipeline.EXAMPLE_KEY]])
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_allclose(values.astype(np.float32), want_values, rtol=1e-3, atol=1e-3)  # float16


def test_hosts_share_the_shards_and_an_interrupted_run_resumes_to_the_same_maps(
    teacher, annotated, tmp_path):
  """Two hosts each killed after their first shard (0 and 1 of 4); run again, host p writes shards
  p + 2: together they give the maps of one uninterrupted process."""
  output, _ = annotated
  resumed = tmp_path / "resumed"
  names = [name for name in os.listdir(output) if name.startswith("shard-")]
  resumed.mkdir()
  for name in ["manifest.json"] + sorted(names)[:2]:
    (resumed / name).write_bytes((output / name).read_bytes())
  for host in (0, 1):
    done = annotate(digits_config(), str(teacher), str(resumed), top_k=3, shards=4,
                    process_index=host, process_count=2)
    assert done == {"written": 1, "resumed": 1, "skipped": 0}
  for name in names:
    with np.load(output / name) as want, np.load(resumed / name) as got:
      for key in ("keys", "values", "indices"):
        np.testing.assert_array_equal(got[key], want[key])


def test_a_teacher_of_another_architecture_is_refused_naming_parameters(teacher, tmp_path):
  with pytest.raises(ValueError, match=r"is not a ViT-tiny/4 for 16 px images .*parameters differ"):
    annotate(digits_config("ViT-tiny/4"), str(teacher), str(tmp_path), top_k=3, shards=4)
