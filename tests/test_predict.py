"""Specification of `python -m vit_jax.predict` on a stand-in run (a ViT-micro/4 workdir for the
digits at 16 px, random weights, its config.json and class names): an image file written from a test
digit goes through exactly the eval pipeline's preprocessing, whatever its format, and gets the
model's top-5 classes by name with their softmax probabilities."""

import numpy as np
import pytest
from PIL import Image

from vit_jax import predict, run_files, teacher
from vit_jax.data import pipeline, sources
from vit_jax.train.loop import save_config

from .states import digits_config, save_stand_in_run

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, config, the first three test digits written as PNG, JPEG-named PNG and WebP)."""
  config = digits_config()
  source = sources.get_source(config.data)
  workdir = save_stand_in_run(config, tmp_path_factory.mktemp("run"), source=source)
  save_config(config, str(workdir))
  run_files.write_class_names(str(workdir), NAMES)
  digits = [example["image"] for example in source.read("test").take(3).as_numpy_iterator()]
  files = [workdir / "digit0.png", workdir / "digit1.JPEG", workdir / "digit2.webp"]
  for digit, path, kind in zip(digits, files, ("PNG", "PNG", "WEBP")):
    Image.fromarray(digit).save(path, kind, lossless=True)
  return workdir, config, [str(f) for f in files]


def test_images_are_preprocessed_exactly_as_the_eval_pipeline_does(run):
  workdir, config, files = run
  images = predict.read_images(files, predict.run_config(str(workdir)), 10)  # the run's config
  batch = next(pipeline.eval_batches(config.data, batch_size=8, image_size=16))
  np.testing.assert_array_equal(images, batch["image"][:3])


def test_each_image_gets_the_top5_classes_by_name_with_the_models_probabilities(run):
  workdir, config, files = run
  results, names_from, kind = predict.predict(str(workdir / "checkpoints" / "1"), files)
  assert names_from == str(workdir / run_files.CLASS_NAMES_FILE) and kind == "softmax"
  model, variables = teacher.load(config, 10, str(workdir))
  batch = next(pipeline.eval_batches(config.data, batch_size=3, image_size=16))
  probabilities = np.asarray(teacher.class_probabilities(model, variables, batch["image"]))
  for (path, top), row in zip(results, probabilities):
    want = np.argsort(-row, kind="stable")[:5]
    assert [k for k, _, _ in top] == list(want) and [n for _, n, _ in top] == [NAMES[k] for k in want]
    np.testing.assert_allclose([s for _, _, s in top], row[want], rtol=1e-6)
  lines = predict.format_results(results[:1], names_from, kind)
  (_, name, score) = results[0][1][0]
  assert lines[0] == files[0] and lines[1].split() == ["1.", name, f"{score:.4f}"]


def test_what_cannot_work_is_refused_in_one_line(run, tmp_path):
  workdir, config, files = run
  (tmp_path / "notes.txt").write_text("not an image")
  with pytest.raises(ValueError, match=r"notes.txt is not an image that TensorFlow or Pillow can read"):
    predict.read_images([str(tmp_path / "notes.txt")], config, 10)
  with pytest.raises(ValueError, match=r"vit.npz is not inside a training workdir with a config.json: "
                                       r"pass --config=FILE"):
    predict.run_config(str(tmp_path / "vit.npz"))
  with pytest.raises(ValueError, match=r"no image files given"):
    predict.predict(str(workdir), [])
