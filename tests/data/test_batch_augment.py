"""Specification of whole-batch augmentation: the crop of every example equals tf.image.resize of its
box, boxes obey the area and aspect ranges, and the draws are a pure function of the batch seed."""
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import batch_augment, pp

SEED = tf.constant([3, 4], tf.int64)


def _images(batch=16, height=12, width=10):
  return tf.constant(np.random.RandomState(0).randint(0, 256, (batch, height, width, 3)), tf.uint8)


@pytest.mark.parametrize("size", [4, 16])  # downscaling and upscaling
def test_every_crop_equals_tf_image_resize_of_its_box(size):
  images = _images()
  box = batch_augment.sample_boxes(16, 12, 10, (0.1, 1.0), seed=SEED)
  crops = batch_augment.crop_and_resize(images, box, size)
  assert crops.shape == (16, size, size, 3) and crops.dtype == tf.float32
  for i, (top, left, height, width) in enumerate(zip(*[b.numpy() for b in box])):
    window = tf.cast(images[i, top:top + height, left:left + width], tf.float32)
    np.testing.assert_allclose(crops[i], tf.image.resize(window, [size, size]), atol=1e-3)


def test_boxes_lie_inside_the_image_with_area_and_aspect_in_range():
  top, left, height, width = [b.numpy() for b in batch_augment.sample_boxes(
      4096, 40, 30, (0.3, 0.6), (0.75, 4 / 3), seed=SEED)]
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + height <= 40).all() and (left + width <= 30).all()
  area, aspect = height * width / (40 * 30), width / height
  assert 0.27 < area.min() and area.max() < 0.65  # the range, up to rounding to whole pixels
  assert 0.7 < aspect.min() and aspect.max() < 1.45
  assert len(set(zip(top, left, height, width))) > 1000  # per-example draws, not one per batch


def test_when_no_box_fits_the_whole_image_is_used():
  top, left, height, width = [b.numpy() for b in batch_augment.sample_boxes(
      8, 40, 4, (0.9, 1.0), (10.0, 11.0), seed=SEED)]  # wide boxes never fit a 40x4 image
  assert (height == 40).all() and (width == 4).all() and (top == 0).all() and (left == 0).all()


def test_draws_are_a_pure_function_of_the_seed():
  images = _images()
  first = batch_augment.inception_crop(images, 8, seed=SEED)
  np.testing.assert_array_equal(first, batch_augment.inception_crop(images, 8, seed=SEED))
  assert not np.array_equal(first, batch_augment.inception_crop(images, 8, seed=SEED + 1))


def test_flip_mirrors_about_half_of_the_examples_and_leaves_the_rest():
  images = _images(batch=256)
  flipped = batch_augment.flip_lr(images, seed=SEED).numpy()
  mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images.numpy())]
  kept = [np.array_equal(f, i) for f, i in zip(flipped, images.numpy())]
  assert all(m or k for m, k in zip(mirrored, kept))
  assert 90 < sum(mirrored) < 166


def test_batch_pipeline_string_runs_the_batch_ops_in_graph_mode_as_eagerly():
  batch = {"image": _images(), "label": tf.range(16)}
  ops = pp.build_batch("inception_crop(8, area_min=0.5)|flip_lr|value_range(-1, 1)")
  eager = ops(batch, SEED)
  graph = tf.function(lambda b: ops(b, SEED))(batch)
  np.testing.assert_allclose(eager["image"], graph["image"], atol=1e-6)
  assert eager["image"].shape == (16, 8, 8, 3)
  assert -1.0 <= float(tf.reduce_min(eager["image"])) and float(tf.reduce_max(eager["image"])) <= 1.0
  np.testing.assert_array_equal(eager["label"], batch["label"])
