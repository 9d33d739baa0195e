"""Preprocessing ops on one decoded image (tf ops, usable eagerly and inside tf.data).

Random ops are stateless and take an explicit seed (a shape-[2] integer tensor), so the same seed
gives the same output wherever the op runs: the input stream is then a pure function of its seeds.
Geometric ops keep the input dtype (uint8 stays uint8, rounded); `value_range` makes the floats.
"""
from typing import Tuple

import tensorflow as tf


def _like_input(resized: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Casts a float32 resize result back to the input's dtype (rounded and clipped for uint8)."""
  if dtype == tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
  return tf.cast(resized, dtype)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes (H, W, C) to (size, size, C) with bilinear interpolation (aspect ratio not kept)."""
  resized = tf.image.resize(image, [size, size], method="bilinear")
  return _like_input(resized, image.dtype)


def inception_crop(image: tf.Tensor, size: int, area_range: Tuple[float, float] = (0.05, 1.0),
                   aspect_range: Tuple[float, float] = (3 / 4, 4 / 3), *, seed) -> tf.Tensor:
  """Random resized crop (Szegedy et al. 2015): a random box of the given area and aspect, resized.

  Args:
    image: (H, W, C) image.
    size: output side length.
    area_range: (min, max) fraction of the image area the box covers.
    aspect_range: (min, max) width/height ratio of the box.
    seed: shape-[2] integer seed of the stateless box sampler.

  Returns:
    The (size, size, C) crop in the dtype of `image`.
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=aspect_range, area_range=area_range,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, crop_size)
  crop.set_shape([None, None, image.shape[-1]])
  return resize(crop, size)


def flip_lr(image: tf.Tensor, seed) -> tf.Tensor:
  """Mirrors (H, W, C) left-right with probability 1/2, decided by the stateless `seed`."""
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


def value_range(image: tf.Tensor, vmin: float = -1.0, vmax: float = 1.0,
                in_min: float = 0.0, in_max: float = 255.0) -> tf.Tensor:
  """Maps pixel values linearly from [in_min, in_max] (uint8 0..255) to float32 [vmin, vmax]."""
  image = tf.cast(image, tf.float32)
  return vmin + (image - in_min) * ((vmax - vmin) / (in_max - in_min))
