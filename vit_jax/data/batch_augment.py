"""Augmentation of whole batches of equal-size images, one op per batch: for small in-memory images.

tf.data runs an example pipeline as one function call per example (about 10 us each); for 8x8 digits
that overhead costs more than the augmentation and takes CPU from XLA on a small machine. These ops
work on a (B, H, W, C) batch at once (as `pp_batch` ops, after batching), with per-example draws
from the batch's seed, which the pipeline derives from (seed, step): resume stays exact. Draws are
made for every row of the global batch and each process keeps those of its rows (`rows`), so
processes draw differently, and with data.global_order the batches do not depend on their number.
"""
from typing import Optional, Tuple

import tensorflow as tf

from vit_jax.data.preprocess import AREA_RANGE, ASPECT_RANGE

Box = Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]
Rows = Tuple[int, int]  # (first row of this batch in the global batch, global batch size)


def sample_boxes(batch_size, height, width, area_range=AREA_RANGE, aspect_range=ASPECT_RANGE, *,
                 seed, attempts: int = 10) -> Box:
  """(top, left, box_height, box_width), int32 (B,) each: per example a box of a uniform area
  fraction in `area_range` and a uniform width/height ratio in `aspect_range`; the first of
  `attempts` draws that fits the image, else the whole image (as TF's inception-crop sampler)."""
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
  shape = [batch_size, attempts]
  image_h, image_w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = tf.random.stateless_uniform(shape, seeds[0], *area_range) * image_h * image_w
  aspect = tf.random.stateless_uniform(shape, seeds[1], *aspect_range)
  box_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  box_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  fits = (box_h >= 1) & (box_w >= 1) & (box_h <= height) & (box_w <= width)
  first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
  any_fits = tf.reduce_any(fits, axis=1)
  box_h = tf.where(any_fits, tf.gather(box_h, first, batch_dims=1), height)
  box_w = tf.where(any_fits, tf.gather(box_w, first, batch_dims=1), width)
  offsets = tf.random.stateless_uniform([batch_size, 2], seeds[2])
  top = tf.cast(tf.floor(offsets[:, 0] * tf.cast(height - box_h + 1, tf.float32)), tf.int32)
  left = tf.cast(tf.floor(offsets[:, 1] * tf.cast(width - box_w + 1, tf.float32)), tf.int32)
  return tf.minimum(top, height - box_h), tf.minimum(left, width - box_w), box_h, box_w


def _interpolation(start, length, size: int, extent) -> tf.Tensor:
  """(B, size, extent) weights of a half-pixel bilinear resize of [start, start + length) of an axis
  of `extent` pixels to `size` (tf.image.resize's sampling, clamped to the box)."""
  length_f = tf.cast(length, tf.float32)[:, None]
  position = (tf.range(size, dtype=tf.float32)[None, :] + 0.5) * length_f / size - 0.5
  floor = tf.floor(position)
  last = length[:, None] - 1
  low = start[:, None] + tf.clip_by_value(tf.cast(floor, tf.int32), 0, last)
  high = start[:, None] + tf.clip_by_value(tf.cast(tf.math.ceil(position), tf.int32), 0, last)
  weight = (position - floor)[..., None]
  return tf.one_hot(low, extent) * (1.0 - weight) + tf.one_hot(high, extent) * weight


def crop_and_resize(images: tf.Tensor, box: Box, size: int) -> tf.Tensor:
  """Each image's box resized to (size, size) bilinearly: float32 (B, size, size, C), equal (up to
  float rounding) to tf.image.resize of the cropped box, computed for the whole batch as two
  batched matmuls with interpolation matrices (rows, then columns)."""
  top, left, box_h, box_w = box
  shape = tf.shape(images)
  rows = _interpolation(top, box_h, size, shape[1])     # (B, size, H)
  columns = _interpolation(left, box_w, size, shape[2])  # (B, size, W)
  images = tf.cast(images, tf.float32)
  return tf.einsum("bsh,bhwc,btw->bstc", rows, images, columns)


def _rows_to_draw(batch_size, rows):
  """How many examples to draw for: the whole global batch when `rows` places this batch in it."""
  return rows[1] if rows else batch_size


def _own_rows(draw: tf.Tensor, batch_size, rows) -> tf.Tensor:
  """This batch's rows [first, first + batch_size) of a draw made for the whole global batch."""
  return draw[rows[0]:rows[0] + batch_size] if rows else draw


def inception_crop_boxes(images: tf.Tensor, area_range=AREA_RANGE, aspect_range=ASPECT_RANGE, *,
                         seed, rows: Optional[Rows] = None) -> Box:
  """The boxes inception_crop cuts out of a (B, H, W, C) batch (`rows` as there)."""
  shape = tf.shape(images)
  box = sample_boxes(_rows_to_draw(shape[0], rows), shape[1], shape[2], area_range, aspect_range,
                     seed=seed)
  return tuple(_own_rows(d, shape[0], rows) for d in box)


def inception_crop(images: tf.Tensor, size: int, area_range=AREA_RANGE, aspect_range=ASPECT_RANGE,
                   *, seed, rows: Optional[Rows] = None) -> tf.Tensor:
  """Random resized crop of every image of a (B, H, W, C) batch: float32 (B, size, size, C).

  `rows` = (first row, global batch size): the batch is those rows of the global batch.
  """
  box = inception_crop_boxes(images, area_range, aspect_range, seed=seed, rows=rows)
  return crop_and_resize(images, box, size)


def flip_decisions(images: tf.Tensor, *, seed, rows: Optional[Rows] = None) -> tf.Tensor:
  """(B,) bool: which images of the batch flip_lr mirrors (`rows` as for inception_crop)."""
  batch_size = tf.shape(images)[0]
  flip = tf.random.stateless_uniform([_rows_to_draw(batch_size, rows)], seed) < 0.5
  return _own_rows(flip, batch_size, rows)


def flip_lr(images: tf.Tensor, *, seed, rows: Optional[Rows] = None) -> tf.Tensor:
  """Mirrors each image of a batch left-right with probability 1/2 (`rows` as for inception_crop)."""
  return mirror(images, flip_decisions(images, seed=seed, rows=rows))


def mirror(images: tf.Tensor, mirrored: tf.Tensor) -> tf.Tensor:
  """The (B, H, W, C) images mirrored left-right where the (B,) bool `mirrored` is set."""
  return tf.where(mirrored[:, None, None, None], tf.reverse(images, [2]), images)
