"""Preprocessing ops on one example's tensors (tf ops, usable eagerly and inside tf.data).

Random ops are stateless and take an explicit seed (a shape-[2] integer tensor), so the same seed
gives the same output wherever the op runs: the input stream is then a pure function of its seeds.
Geometric ops keep the input dtype (uint8 stays uint8, rounded); `value_range` makes the floats.
Pipelines are written as strings of these ops (see pp.py); RandAugment lives in randaugment.py and
the batch-level mixup and cutmix in mixing.py.
"""
from typing import Tuple

import tensorflow as tf

AREA_RANGE = (0.05, 1.0)  # The ViT recipe's inception crop: 5% to 100% of the image area.
ASPECT_RANGE = (3 / 4, 4 / 3)


def _like_input(resized: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Casts a float32 resize result back to the input's dtype (rounded and clipped for uint8)."""
  if dtype == tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
  return tf.cast(resized, dtype)


def to_rgb(image: tf.Tensor) -> tf.Tensor:
  """(H, W, 1) grayscale -> (H, W, 3); (H, W, 4) drops alpha; (H, W, 3) is returned as is."""
  channels = image.shape[-1]
  if channels == 1:
    return tf.image.grayscale_to_rgb(image)
  if channels == 4:
    return image[..., :3]
  if channels != 3:
    raise ValueError(f"Cannot make RGB from an image with {channels} channels.")
  return image


def decode(data: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 (H, W, 3) RGB; already decoded uint8 passes through.

  Grayscale is replicated to 3 channels and CMYK JPEGs are converted to RGB by the JPEG decoder;
  the format is sniffed from the bytes, so a PNG saved under a .JPEG name decodes too.
  Undecodable bytes raise tf.errors.InvalidArgumentError (the pipeline skips and counts them).
  """
  data = tf.convert_to_tensor(data)
  if data.dtype == tf.string:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])
  return to_rgb(data)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes (H, W, C) to (size, size, C) with bilinear interpolation (aspect ratio not kept)."""
  resized = tf.image.resize(image, [size, size], method="bilinear")
  return _like_input(resized, image.dtype)


def resize_small(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes (H, W, C) so that its shorter side is `size`, keeping the aspect ratio (bilinear)."""
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
  new_hw = tf.maximum(tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32), size)
  resized = tf.image.resize(image, new_hw, method="bilinear")
  return _like_input(resized, image.dtype)


def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """The central (size, size) window of (H, W, C); H and W must be at least `size`."""
  shape = tf.shape(image)
  tf.debugging.assert_greater_equal(
      tf.minimum(shape[0], shape[1]), size,
      message=f"central_crop({size}) needs an image of at least {size}x{size}: resize first")
  top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
  crop = tf.slice(image, [top, left, 0], [size, size, -1])
  crop.set_shape([size, size, image.shape[-1]])
  return crop


def inception_crop_box(image_shape: tf.Tensor, area_range: Tuple[float, float] = AREA_RANGE,
                       aspect_range: Tuple[float, float] = ASPECT_RANGE, *, seed):
  """(begin, size) of inception_crop's random box in an image of `image_shape` ([H, W, C] int32):
  begin = [top, left, 0], size = [height, width, -1], as tf.slice takes them."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, bounding_boxes=tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=aspect_range, area_range=area_range,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return begin, crop_size


def inception_crop(image: tf.Tensor, size: int, area_range: Tuple[float, float] = AREA_RANGE,
                   aspect_range: Tuple[float, float] = ASPECT_RANGE, *, seed) -> tf.Tensor:
  """Random resized crop (Szegedy et al. 2015): a random box of the given area and aspect, resized.

  Args:
    image: (H, W, C) image.
    size: output side length.
    area_range: (min, max) fraction of the image area the box covers.
    aspect_range: (min, max) width/height ratio of the box.
    seed: shape-[2] integer seed of the stateless box sampler.

  Returns:
    The (size, size, C) crop in the dtype of `image`. When no box fits in 10 attempts the whole
    image is used (TF's sampler), as in the reference implementations.
  """
  begin, crop_size = inception_crop_box(tf.shape(image), area_range, aspect_range, seed=seed)
  return crop_and_resize(image, begin, crop_size, size)


def crop_and_resize(image: tf.Tensor, begin: tf.Tensor, crop_size: tf.Tensor, size: int) -> tf.Tensor:
  """tf.slice(image, begin, crop_size) resized to (size, size)."""
  crop = tf.slice(image, begin, crop_size)
  crop.set_shape([None, None, image.shape[-1]])
  return resize(crop, size)


def decode_jpeg_and_inception_crop(data: tf.Tensor, size: int,
                                   area_range: Tuple[float, float] = AREA_RANGE,
                                   aspect_range: Tuple[float, float] = ASPECT_RANGE, *,
                                   seed) -> tf.Tensor:
  """decode then inception_crop, but a JPEG decodes only the crop window (faster, same box).

  The box is sampled from the same seed as inception_crop, so the result equals decode followed by
  inception_crop except for a few levels at the crop edges of chroma-subsampled JPEGs. Non-JPEG
  bytes and decoded images take the unfused path.
  """
  return decode_jpeg_and_inception_crop_box(data, size, area_range, aspect_range, seed=seed)[0]


def decode_jpeg_and_inception_crop_box(data: tf.Tensor, size: int,
                                       area_range: Tuple[float, float] = AREA_RANGE,
                                       aspect_range: Tuple[float, float] = ASPECT_RANGE, *, seed):
  """(crop, begin, crop_size, decoded image shape) of decode_jpeg_and_inception_crop."""
  data = tf.convert_to_tensor(data)

  def unfused():
    image = decode(data)
    shape = tf.shape(image)
    begin, crop_size = inception_crop_box(shape, area_range, aspect_range, seed=seed)
    return crop_and_resize(image, begin, crop_size, size), begin, crop_size, shape

  if data.dtype != tf.string:
    return unfused()

  def fused():
    shape = tf.io.extract_jpeg_shape(data)
    begin, crop_size = inception_crop_box(shape, area_range, aspect_range, seed=seed)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    crop = tf.io.decode_and_crop_jpeg(data, window, channels=3)
    return resize(tf.ensure_shape(crop, [None, None, 3]), size), begin, crop_size, shape

  return tf.cond(tf.io.is_jpeg(data), fused, unfused)


def flip_lr_decision(seed) -> tf.Tensor:
  """Whether flip_lr with this `seed` mirrors (a bool scalar; tf.image's stateless draw)."""
  return tf.random.stateless_uniform([], seed=seed, minval=0, maxval=1.0) < 0.5


def flip_lr(image: tf.Tensor, seed) -> tf.Tensor:
  """Mirrors (H, W, C) left-right with probability 1/2, decided by the stateless `seed`
  (flip_lr_decision; the same draw as tf.image.stateless_random_flip_left_right)."""
  return tf.cond(flip_lr_decision(seed), lambda: tf.reverse(image, [1]), lambda: image)


def value_range(image: tf.Tensor, vmin: float = -1.0, vmax: float = 1.0,
                in_min: float = 0.0, in_max: float = 255.0) -> tf.Tensor:
  """Maps pixel values linearly from [in_min, in_max] (uint8 0..255) to float32 [vmin, vmax]."""
  image = tf.cast(image, tf.float32)
  return vmin + (image - in_min) * ((vmax - vmin) / (in_max - in_min))


def _smooth(hot: tf.Tensor, num_classes: int, smoothing: float) -> tf.Tensor:
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"label smoothing={smoothing} must lie in [0, 1).")
  return hot * (1.0 - smoothing) + smoothing / num_classes


def _checked(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
  """The labels, after asserting they lie in [0, num_classes) (one_hot would zero them silently)."""
  check = tf.debugging.Assert(
      tf.reduce_all((labels >= 0) & (labels < num_classes)),
      [f"label outside [0, num_classes={num_classes}):", labels])
  with tf.control_dependencies([check]):
    return tf.identity(labels)


def onehot(label: tf.Tensor, num_classes: int, smoothing: float = 0.0) -> tf.Tensor:
  """Integer label () -> float32 (num_classes,): 1 - s + s/K on the label, s/K elsewhere."""
  label = _checked(tf.cast(label, tf.int32), num_classes)
  hot = tf.one_hot(label, num_classes, dtype=tf.float32)
  return _smooth(hot, num_classes, smoothing)


def multi_hot(labels: tf.Tensor, num_classes: int, smoothing: float = 0.0) -> tf.Tensor:
  """Variable-length integer labels (n,) -> float32 (num_classes,) with 1 on each (smoothed as onehot).

  Labels outside [0, num_classes) are an error, never dropped or wrapped silently.
  """
  labels = _checked(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
  counts = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
  hot = tf.ensure_shape(tf.cast(counts > 0, tf.float32), [num_classes])
  return _smooth(hot, num_classes, smoothing)
