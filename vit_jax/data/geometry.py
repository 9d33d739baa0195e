"""Where an augmented image came from: its crop box in the source image, whether it was mirrored, and
how it was warped.

Dense targets stored for the whole source image (token labeling's score maps, data/score_maps.py)
must follow the augmentation, so they need the region each training image shows. A pipeline that
tracks geometry starts every example as the whole image, unmirrored and unwarped (`start`), and the
crop, flip and RandAugment ops, per example and per batch, update it (`cropped`, `flipped`, `warped`)
when it is there:

  BOX      float32 (..., 4): (top, left, height, width) as fractions of the source image's height
           and width
  FLIPPED  bool (...): the image is the box's content mirrored left-right
  WARP     float32 (..., 6): [a, b, c, d, e, f], the image's point (u, v) (fractions of its width and
           height) shows the point (a u + b v + c, d u + e v + f) of flip?(crop(source, BOX))

so the image is warp(flip?(crop(source, BOX))). Resizes keep all three (fractions do not change).
Crops and flips must come before any warp (`check_order`). Every function works on one example
(BOX (4,)) and on a batch (BOX (B, 4)) alike.
"""
from typing import Dict

import tensorflow as tf

from vit_jax.data.batch_keys import BOX, FLIPPED, WARP

WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
UNWARPED = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CROPS_AND_FLIPS = ("inception_crop", "decode_jpeg_and_inception_crop", "central_crop", "flip_lr")
WARPS = ("randaug",)


def start(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """The example marked as the whole source image, unmirrored and unwarped: its ops now track it."""
  return {**example, BOX: tf.constant(WHOLE_IMAGE, tf.float32), FLIPPED: tf.constant(False),
          WARP: tf.constant(UNWARPED, tf.float32)}


def tracked(example: Dict[str, tf.Tensor]) -> bool:
  return BOX in example


def cropped(example: Dict[str, tf.Tensor], top, left, height, width,
            image_height, image_width) -> Dict[str, tf.Tensor]:
  """The example's geometry after cutting (top, left, height, width) pixels out of its current
  (image_height, image_width) image; unchanged examples that are not tracked."""
  if not tracked(example):
    return example
  as_fraction = lambda value, extent: tf.cast(value, tf.float32) / tf.cast(extent, tf.float32)  # noqa: E731
  top, height = as_fraction(top, image_height), as_fraction(height, image_height)
  left, width = as_fraction(left, image_width), as_fraction(width, image_width)
  # In a mirrored image, a box at `left` shows the unmirrored content at 1 - left - width.
  left = tf.where(example[FLIPPED], 1.0 - left - width, left)
  box = example[BOX]
  outer_top, outer_left, outer_height, outer_width = (box[..., i] for i in range(4))
  new_box = tf.stack([outer_top + top * outer_height, outer_left + left * outer_width,
                      height * outer_height, width * outer_width], axis=-1)
  return {**example, BOX: new_box}


def flipped(example: Dict[str, tf.Tensor], mirrored: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The example's geometry after mirroring its image where `mirrored`; unchanged if not tracked."""
  if not tracked(example):
    return example
  return {**example, FLIPPED: tf.math.logical_xor(example[FLIPPED], mirrored)}


def warped(example: Dict[str, tf.Tensor], warp: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The example's geometry after warping its image by `warp` ([a, b, c, d, e, f] from the new
  image's fractions to the old one's); unchanged if not tracked."""
  if not tracked(example):
    return example
  return {**example, WARP: compose(example[WARP], warp)}


def compose(outer: tf.Tensor, inner: tf.Tensor) -> tf.Tensor:
  """The affine map p -> outer(inner(p)) of two [a, b, c, d, e, f] maps (shape (..., 6))."""
  a1, b1, c1, d1, e1, f1 = (outer[..., i] for i in range(6))
  a2, b2, c2, d2, e2, f2 = (inner[..., i] for i in range(6))
  return tf.stack([a1 * a2 + b1 * d2, a1 * b2 + b1 * e2, a1 * c2 + b1 * f2 + c1,
                   d1 * a2 + e1 * d2, d1 * b2 + e1 * e2, d1 * c2 + e1 * f2 + f1], axis=-1)


def check_order(example_ops, batch_ops) -> None:
  """Tracked pipelines crop and flip before they warp: a crop of a warped image is not a box of the
  source. `example_ops` and `batch_ops` are the op names in order (batch ops run after)."""
  names = list(example_ops) + list(batch_ops)
  warps = [i for i, name in enumerate(names) if name in WARPS]
  late = [name for name in names[warps[0]:] if name in CROPS_AND_FLIPS] if warps else []
  if late:
    raise ValueError(f"{late[0]} after {names[warps[0]]}: with score maps, crops and flips must "
                     f"come before RandAugment (the maps follow a crop of the source, then its "
                     f"warp); move {names[warps[0]]} after them")
