"""Where an augmented image came from: its crop box in the source image and whether it was mirrored.

Dense targets stored for the whole source image (token labeling's score maps, data/score_maps.py)
must follow the augmentation, so they need the region each training image shows. A pipeline that
tracks geometry starts every example as the whole image, unmirrored (`start`), and the crop and
flip ops, per example and per batch, update it (`cropped`, `flipped`) when it is there:

  BOX      float32 (..., 4): (top, left, height, width) as fractions of the source image's height
           and width
  FLIPPED  bool (...): the image is the box's content mirrored left-right

so the image is flip?(crop(source, BOX)). Resizes keep both (fractions do not change); RandAugment's
rotate, shear and translate are not tracked (see docs/architectures.md#token-labeling-pipeline).
Every function works on one example (BOX (4,)) and on a batch (BOX (B, 4)) alike.
"""
from typing import Dict

import tensorflow as tf

from vit_jax.data.batch_keys import BOX, FLIPPED
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


def start(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """The example marked as the whole source image, unmirrored: crop and flip ops now track it."""
  return {**example, BOX: tf.constant(WHOLE_IMAGE, tf.float32), FLIPPED: tf.constant(False)}


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
