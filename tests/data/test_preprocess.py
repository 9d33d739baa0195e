"""Specification of the preprocessing ops: shapes, dtypes, value range and seeded determinism."""
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import preprocess


@pytest.fixture(scope="module")
def image():
  return tf.constant(np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8))


def _seed(i):
  return tf.constant([i, 7], tf.int64)


def test_resize_gives_size_by_size_and_keeps_uint8(image):
  out = preprocess.resize(image, 12)
  assert out.shape == (12, 12, 3) and out.dtype == tf.uint8
  flat = preprocess.resize(tf.fill([9, 5, 3], tf.constant(200, tf.uint8)), 4)
  np.testing.assert_array_equal(flat.numpy(), 200)


def test_inception_crop_gives_size_by_size_and_keeps_uint8(image):
  out = preprocess.inception_crop(image, 16, seed=_seed(0))
  assert out.shape == (16, 16, 3) and out.dtype == tf.uint8


def test_inception_crop_is_a_function_of_its_seed(image):
  a = preprocess.inception_crop(image, 16, seed=_seed(1))
  b = preprocess.inception_crop(image, 16, seed=_seed(1))
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  others = [preprocess.inception_crop(image, 16, seed=_seed(i)).numpy() for i in range(2, 6)]
  assert any(not np.array_equal(a.numpy(), o) for o in others)


def test_inception_crop_of_the_full_area_is_a_plain_resize():
  square = tf.constant(np.random.default_rng(2).integers(0, 256, (24, 24, 3), np.uint8))
  out = preprocess.inception_crop(square, 8, area_range=(1.0, 1.0), seed=_seed(3))
  np.testing.assert_array_equal(out.numpy(), preprocess.resize(square, 8).numpy())


def test_flip_lr_mirrors_or_keeps_the_image_depending_on_the_seed(image):
  outs = [preprocess.flip_lr(image, _seed(i)).numpy() for i in range(16)]
  flipped = [np.array_equal(o, image.numpy()[:, ::-1]) for o in outs]
  kept = [np.array_equal(o, image.numpy()) for o in outs]
  assert all(f or k for f, k in zip(flipped, kept))
  assert any(flipped) and any(kept)
  np.testing.assert_array_equal(outs[3], preprocess.flip_lr(image, _seed(3)).numpy())


def test_ops_inside_tf_data_match_eager(image):
  seeds = tf.constant([[i, 7] for i in range(6)], tf.int64)

  def augment(seed):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return preprocess.flip_lr(preprocess.inception_crop(image, 10, seed=crop_seed), flip_seed)

  in_graph = list(tf.data.Dataset.from_tensor_slices(seeds).map(augment).as_numpy_iterator())
  for seed, out in zip(seeds, in_graph):
    np.testing.assert_array_equal(out, augment(seed).numpy())


def test_value_range_maps_0_to_minus_1_and_255_to_1():
  out = preprocess.value_range(tf.constant([0, 255, 51], tf.uint8))
  assert out.dtype == tf.float32
  np.testing.assert_allclose(out.numpy(), [-1.0, 1.0, -0.6], atol=1e-6)
  np.testing.assert_allclose(
      preprocess.value_range(tf.constant([0, 255], tf.uint8), 0.0, 1.0).numpy(), [0.0, 1.0])
