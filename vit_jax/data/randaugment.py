"""RandAugment (Cubuk et al. 2020) on uint8 (H, W, 3) images, with stateless seeds.

`randaugment(image, num_layers=N, magnitude=M, seed=s)` applies N ops drawn uniformly (with
replacement) from the 14 of the paper, each at magnitude M (10 is the paper's maximum; larger values
extrapolate, as in the ViT/big_vision sweeps). The colour ops follow PIL's definitions (ImageOps and
ImageEnhance), so each can be checked against PIL; geometric ops use nearest-neighbour sampling and
fill uncovered pixels with gray (128). Ops with a direction (rotate, shear, translate, enhance
factors) take a random sign.
"""
from typing import Callable, Dict

import tensorflow as tf

from vit_jax.data import geometry

FILL = 128
MAX_LEVEL = 10.0


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's Image.blend(degenerate, image, factor): truncated to integers and clipped to 0..255."""
  d = tf.cast(degenerate, tf.float32)
  out = d + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - d)
  return tf.cast(tf.clip_by_value(tf.floor(out), 0.0, 255.0), tf.uint8)


def _luminance(image: tf.Tensor) -> tf.Tensor:
  """PIL's RGB -> L conversion, (R 19595 + G 38470 + B 7471 + 2^15) >> 16, as (H, W, 1) int32."""
  rgb = tf.cast(image, tf.int32)
  weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
  return tf.bitwise.right_shift(weighted, 16)[..., None]


def _lut(image: tf.Tensor, lut: tf.Tensor) -> tf.Tensor:
  """Applies a per-channel lookup table lut (3, 256) to a uint8 image."""
  channels = tf.unstack(tf.cast(image, tf.int32), axis=-1)
  out = [tf.gather(lut[c], channels[c]) for c in range(3)]
  return tf.cast(tf.stack(out, axis=-1), tf.uint8)


def identity(image, level, sign):
  del level, sign
  return image


def autocontrast(image, level, sign):
  """Per channel, maps [min, max] linearly onto [0, 255] (PIL ImageOps.autocontrast)."""
  del level, sign
  flat = tf.cast(tf.reshape(image, [-1, 3]), tf.float32)
  lo, hi = tf.reduce_min(flat, axis=0), tf.reduce_max(flat, axis=0)
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  ix = tf.range(256, dtype=tf.float32)[None, :]
  lut = tf.clip_by_value(tf.floor(ix * scale[:, None] - lo[:, None] * scale[:, None]), 0, 255)
  lut = tf.where((hi > lo)[:, None], lut, ix)
  return _lut(image, tf.cast(lut, tf.int32))


def equalize(image, level, sign):
  """Per channel histogram equalization (PIL ImageOps.equalize)."""
  del level, sign
  luts = []
  for c in range(3):
    hist = tf.math.bincount(tf.cast(tf.reshape(image[..., c], [-1]), tf.int32),
                            minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    safe_step = tf.maximum(step, 1)
    # lut[i] = (step // 2 + sum(hist[:i])) // step
    cumulative = tf.concat([[0], tf.cumsum(hist)[:-1]], axis=0)
    lut = (safe_step // 2 + cumulative) // safe_step
    luts.append(tf.where(step > 0, tf.minimum(lut, 255), tf.range(256)))
  return _lut(image, tf.stack(luts))


def solarize(image, level, sign):
  """Inverts pixels >= threshold, threshold = 256 (none) at level 0 down to 0 (all) at level 10."""
  del sign
  threshold = tf.clip_by_value(256.0 - 256.0 * level / MAX_LEVEL, 0.0, 256.0)
  return tf.where(tf.cast(image, tf.float32) < threshold, image, 255 - image)


def posterize(image, level, sign):
  """Keeps the top `bits` bits of each value: 8 bits at level 0, 4 at level 10 (at least 1)."""
  del sign
  bits = tf.clip_by_value(8 - tf.cast(4.0 * level / MAX_LEVEL, tf.int32), 1, 8)
  mask = tf.cast(tf.bitwise.invert(tf.bitwise.left_shift(1, 8 - bits) - 1) % 256, tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def _factor(level, sign):
  return 1.0 + sign * 0.9 * level / MAX_LEVEL


def color(image, level, sign):
  """PIL ImageEnhance.Color: blend with the grayscale image."""
  gray = tf.cast(tf.tile(_luminance(image), [1, 1, 3]), tf.uint8)
  return _blend(gray, image, _factor(level, sign))


def contrast(image, level, sign):
  """PIL ImageEnhance.Contrast: blend with the mean gray level."""
  mean = tf.floor(tf.reduce_mean(tf.cast(_luminance(image), tf.float32)) + 0.5)
  return _blend(tf.fill(tf.shape(image), mean), image, _factor(level, sign))


def brightness(image, level, sign):
  """PIL ImageEnhance.Brightness: blend with black."""
  return _blend(tf.zeros_like(image), image, _factor(level, sign))


def sharpness(image, level, sign):
  """PIL ImageEnhance.Sharpness: blend with PIL's SMOOTH filter (3x3, centre 5, total 13)."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  x = tf.cast(image, tf.float32)[None]
  smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.cast(tf.clip_by_value(tf.round(smooth), 0.0, 255.0), tf.uint8)
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])  # PIL leaves the 1-pixel border as it was.
  shape = tf.shape(image)
  border = tf.pad(tf.zeros([shape[0] - 2, shape[1] - 2, 3], tf.bool), [[1, 1], [1, 1], [0, 0]],
                  constant_values=True)
  return _blend(tf.where(border, image, smooth), image, _factor(level, sign))


def transform(image: tf.Tensor, matrix) -> tf.Tensor:
  """Output pixel (x, y) takes input pixel round(a x + b y + c, d x + e y + f); outside: gray."""
  shape = tf.shape(image)
  matrix = tf.concat([tf.cast(tf.reshape(matrix, [6]), tf.float32), tf.zeros([2])], 0)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=matrix, output_shape=shape[:2],
      fill_value=tf.constant(FILL, tf.float32), interpolation="NEAREST", fill_mode="CONSTANT")
  return tf.ensure_shape(out[0], image.shape)


def rotate_matrix(shape, level, sign):
  """Counter-clockwise rotation about the centre by sign * 30 degrees at level 10."""
  angle = sign * 30.0 * level / MAX_LEVEL * (3.141592653589793 / 180.0)
  shape = tf.cast(shape, tf.float32)
  cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
  c, s = tf.cos(angle), tf.sin(angle)
  return tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])


def shear_x_matrix(shape, level, sign):
  del shape
  shear = sign * 0.3 * level / MAX_LEVEL
  return tf.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0])


def shear_y_matrix(shape, level, sign):
  del shape
  shear = sign * 0.3 * level / MAX_LEVEL
  return tf.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0])


def _shift(shape, level, sign, axis):
  size = tf.cast(shape[axis], tf.float32)
  return tf.round(sign * 0.45 * level / MAX_LEVEL * size)


def translate_x_matrix(shape, level, sign):
  """Moves the content right by sign * 45% of the width at level 10 (whole pixels)."""
  return tf.stack([1.0, 0.0, -_shift(shape, level, sign, 1), 0.0, 1.0, 0.0])


def translate_y_matrix(shape, level, sign):
  """Moves the content down by sign * 45% of the height at level 10 (whole pixels)."""
  return tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -_shift(shape, level, sign, 0)])


# The geometric ops, by the matrix `transform` applies: output pixel (x, y) <- input pixel
# (a x + b y + c, d x + e y + f) as [a, b, c, d, e, f], from (image shape, level, sign).
MATRICES: Dict[str, Callable] = {
    "rotate": rotate_matrix, "shear_x": shear_x_matrix, "shear_y": shear_y_matrix,
    "translate_x": translate_x_matrix, "translate_y": translate_y_matrix,
}


def _geometric(name: str) -> Callable:
  def op(image, level, sign):
    return transform(image, MATRICES[name](tf.shape(image), level, sign))
  op.__name__ = name
  op.__doc__ = MATRICES[name].__doc__
  return op


rotate, shear_x, shear_y = _geometric("rotate"), _geometric("shear_x"), _geometric("shear_y")
translate_x, translate_y = _geometric("translate_x"), _geometric("translate_y")


OPS: Dict[str, Callable] = {
    "identity": identity, "autocontrast": autocontrast, "equalize": equalize, "rotate": rotate,
    "solarize": solarize, "color": color, "posterize": posterize, "contrast": contrast,
    "brightness": brightness, "sharpness": sharpness, "shear_x": shear_x, "shear_y": shear_y,
    "translate_x": translate_x, "translate_y": translate_y,
}
NAMES = tuple(OPS)


def apply_op(image: tf.Tensor, name: str, magnitude: float, sign: float = 1.0) -> tf.Tensor:
  """Applies the named op to a uint8 (H, W, 3) image at `magnitude` with direction `sign` (+-1)."""
  if image.dtype != tf.uint8:
    raise ValueError(f"RandAugment works on uint8 images, got {image.dtype}: put randaug before "
                     "value_range in the pipeline.")
  return OPS[name](image, tf.constant(magnitude, tf.float32), tf.constant(sign, tf.float32))


def choices(num_layers: int, seed):
  """The (op indices, signs) that randaugment draws for `seed`: both of shape (num_layers,)."""
  op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(
      tf.cast(seed, tf.int64), 2))
  indices = tf.random.stateless_uniform([num_layers], op_seed, 0, len(OPS), dtype=tf.int32)
  signs = tf.where(tf.random.stateless_uniform([num_layers], sign_seed) < 0.5, -1.0, 1.0)
  return indices, signs


@tf.autograph.experimental.do_not_convert  # Plain tf ops: skipping autograph halves tracing time.
def randaugment(image: tf.Tensor, num_layers: int = 2, magnitude: float = 10.0, *,
                seed) -> tf.Tensor:
  """Applies `num_layers` ops drawn by `seed` from NAMES, each at `magnitude`."""
  if image.dtype != tf.uint8:
    raise ValueError(f"RandAugment works on uint8 images, got {image.dtype}: put randaug before "
                     "value_range in the pipeline.")
  static_shape = image.shape
  indices, signs = choices(num_layers, seed)
  level = tf.constant(magnitude, tf.float32)
  for layer in range(num_layers):
    branches = [lambda op=op, s=signs[layer]: op(image, level, s) for op in OPS.values()]
    image = tf.switch_case(indices[layer], branches)
    image = tf.ensure_shape(image, static_shape)
  return image




def warp(image_shape, num_layers: int = 2, magnitude: float = 10.0, *, seed) -> tf.Tensor:
  """Where randaugment(seed) takes each output pixel from, in fractions of the image: float32 (6,)
  [a, b, c, d, e, f] with input (u', v') = (a u + b v + c, d u + e v + f) for output (u, v), where
  (u, v) = ((column + 0.5) / W, (row + 0.5) / H). The identity when only colour ops were drawn."""
  indices, signs = choices(num_layers, seed)
  level = tf.constant(magnitude, tf.float32)
  height, width = (tf.cast(image_shape[i], tf.float32) for i in (0, 1))
  # Pixel <-> fraction: x = u W - 0.5. A pixel-space [a, b, c] row becomes, in fractions,
  # u' = a u + b v H / W + (c + 0.5 - 0.5 a - 0.5 b) / W (and likewise for v').
  total = tf.constant(geometry.UNWARPED, tf.float32)
  for layer in range(num_layers):
    branches = [lambda name=name, s=signs[layer]: (
        MATRICES[name](image_shape, level, s) if name in MATRICES
        else tf.constant(geometry.UNWARPED, tf.float32)) for name in OPS]
    a, b, c, d, e, f = tf.unstack(tf.switch_case(indices[layer], branches))
    step = tf.stack([a, b * height / width, (c + 0.5 - 0.5 * a - 0.5 * b) / width,
                     d * width / height, e, (f + 0.5 - 0.5 * d - 0.5 * e) / height])
    total = geometry.compose(total, step)
  return total

