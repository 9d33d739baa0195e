"""The SavedModel serves uint8 images of any size and batch: it resizes and scales them as the run's eval
pipeline does, and its logits are the JAX model's (float32, 1e-4)."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import preprocess
from vit_jax.export import saved_model

from . import tiny

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A ViT-testing (32 px) SavedModel with random weights, loaded back: (trained, serving function)."""
  trained = tiny.trained("ViT-testing", image_size=32)
  directory = tmp_path_factory.mktemp("saved") / "vit"
  saved_model.save_saved_model(trained, directory)
  return trained, tf.saved_model.load(str(directory)).signatures[saved_model.SIGNATURE]


def jax_logits(trained, images: np.ndarray) -> np.ndarray:
  """The eval pipeline's resize (bilinear, rounded back to uint8) and value range, then the model."""
  pixels = np.stack([preprocess.value_range(preprocess.resize(image, 32)).numpy() for image in images])
  return np.asarray(jax.jit(lambda x: trained.model.apply(trained.variables, x, train=False))(pixels))


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (3, 45, 20, 3)], ids=["batch2_32x32", "batch3_45x20"])
def test_logits_are_the_jax_models_for_any_batch_and_image_size(exported, shape):
  trained, serve = exported
  images = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
  got = serve(**{saved_model.INPUT: tf.constant(images)})[saved_model.OUTPUT].numpy()
  want = jax_logits(trained, images)
  assert got.shape == (shape[0], 10) and np.abs(want).max() > 0.1
  assert np.abs(got - want).max() <= TOLERANCE


def test_the_signature_takes_uint8_images_of_unknown_batch_and_size(exported):
  _, serve = exported
  (spec,) = serve.structured_input_signature[1].values()
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]


def test_random_eval_ops_are_refused():
  with pytest.raises(ValueError, match="random ops; a served model must be deterministic"):
    saved_model.serving_preprocess("decode|resize(32)|flip_lr|value_range(-1, 1)", 32)


def test_label_ops_of_the_eval_pipeline_are_dropped():
  serve_one = saved_model.serving_preprocess("decode|resize(8)|value_range(0, 1)|multi_hot", 8)
  image = np.full((3, 5, 3), 255, np.uint8)
  np.testing.assert_allclose(serve_one(tf.constant(image)).numpy(), np.ones((8, 8, 3)))
