"""Specification of the preprocessing ops: fixed inputs, expected outputs, same result in tf.data."""
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from vit_jax.data import preprocess


def _seed(i):
  return tf.constant([i, 7], tf.int64)


def _encode(array, fmt, mode=None, **kwargs):
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


@pytest.fixture(scope="module")
def image():
  return tf.constant(np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8))


FLAT = np.zeros((6, 10, 3), np.uint8) + np.array([200, 50, 30], np.uint8)  # One colour.


# ----------------------------------------------------------------------------- decode

def test_decode_png_is_lossless():
  pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), np.uint8)
  np.testing.assert_array_equal(preprocess.decode(_encode(pixels, "PNG")).numpy(), pixels)


def test_decode_jpeg_cmyk_jpeg_and_png_named_jpeg_give_the_rgb_colour():
  for data in (_encode(FLAT, "JPEG", quality=95), _encode(FLAT, "JPEG", "CMYK", quality=95),
               _encode(FLAT, "PNG")):
    out = preprocess.decode(data).numpy()
    assert out.shape == (6, 10, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.reshape(-1, 3), np.tile([200, 50, 30], (60, 1)), atol=2)


def test_decode_grayscale_png_and_decoded_arrays_become_rgb():
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
  np.testing.assert_array_equal(preprocess.decode(_encode(gray, "PNG")).numpy(),
                                np.repeat(gray[..., None], 3, -1))
  np.testing.assert_array_equal(preprocess.decode(tf.constant(gray[..., None])).numpy(),
                                np.repeat(gray[..., None], 3, -1))
  rgb = np.ones((2, 2, 3), np.uint8)
  np.testing.assert_array_equal(preprocess.decode(tf.constant(rgb)).numpy(), rgb)


def test_decode_of_truncated_or_garbage_bytes_raises():
  jpeg = _encode(np.random.default_rng(2).integers(0, 256, (40, 40, 3), np.uint8), "JPEG")
  for data in (jpeg[:len(jpeg) // 2], b"\xff\xd8 not really a jpeg"):
    with pytest.raises(tf.errors.InvalidArgumentError):
      preprocess.decode(data)


# ----------------------------------------------------------------------------- geometry

def test_resize_is_bilinear_with_half_pixel_centres_and_keeps_uint8():
  ramp = tf.constant(np.array([[0, 100]] * 2, np.uint8)[..., None])  # (2, 2, 1)
  out = preprocess.resize(ramp, 4).numpy()[..., 0]
  np.testing.assert_array_equal(out, [[0, 25, 75, 100]] * 4)
  assert preprocess.resize(ramp, 4).dtype == tf.uint8


def test_resize_small_keeps_the_aspect_ratio():
  out = preprocess.resize_small(tf.zeros([20, 30, 3], tf.uint8), 10)
  assert out.shape == (10, 15, 3) and out.dtype == tf.uint8
  assert preprocess.resize_small(tf.zeros([30, 20, 3]), 10).shape == (15, 10, 3)


def test_central_crop_takes_the_middle():
  grid = np.arange(6 * 8).reshape(6, 8, 1).astype(np.uint8)
  np.testing.assert_array_equal(preprocess.central_crop(tf.constant(grid), 4).numpy(),
                                grid[1:5, 2:6])
  with pytest.raises(tf.errors.InvalidArgumentError, match="resize first"):
    preprocess.central_crop(tf.constant(grid), 7)


def test_flip_lr_mirrors_or_keeps_the_image_depending_on_the_seed(image):
  outs = [preprocess.flip_lr(image, _seed(i)).numpy() for i in range(16)]
  flipped = [np.array_equal(o, image.numpy()[:, ::-1]) for o in outs]
  kept = [np.array_equal(o, image.numpy()) for o in outs]
  assert all(f or k for f, k in zip(flipped, kept))
  assert any(flipped) and any(kept)
  np.testing.assert_array_equal(outs[3], preprocess.flip_lr(image, _seed(3)).numpy())


def _crop_box(size, area_range, aspect_range, seed):
  """The box inception_crop picks, read off an image whose pixels hold their own coordinates."""
  h, w = size
  coords = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).astype(np.float32)
  crop = preprocess.inception_crop(tf.constant(coords), 64, area_range, aspect_range,
                                   seed=seed).numpy()
  return crop[..., 0].min(), crop[..., 0].max(), crop[..., 1].min(), crop[..., 1].max()


def test_inception_crop_picks_boxes_within_the_area_and_aspect_ranges():
  areas, aspects = [], []
  for i in range(20):
    top, bottom, left, right = _crop_box((100, 120), (0.2, 0.5), (0.5, 2.0), _seed(i))
    height, width = bottom - top + 1, right - left + 1
    areas.append(height * width / (100 * 120))
    aspects.append(width / height)
  assert 0.18 <= min(areas) and max(areas) <= 0.52
  assert 0.45 <= min(aspects) and max(aspects) <= 2.1
  assert len({round(a, 3) for a in areas}) > 10  # Different seeds, different boxes.


def test_inception_crop_defaults_follow_the_vit_recipe():
  assert preprocess.AREA_RANGE == (0.05, 1.0)
  assert preprocess.ASPECT_RANGE == (3 / 4, 4 / 3)


def test_inception_crop_is_a_function_of_its_seed_and_keeps_uint8(image):
  a = preprocess.inception_crop(image, 16, seed=_seed(1))
  assert a.shape == (16, 16, 3) and a.dtype == tf.uint8
  np.testing.assert_array_equal(a.numpy(), preprocess.inception_crop(image, 16, seed=_seed(1)))
  others = [preprocess.inception_crop(image, 16, seed=_seed(i)).numpy() for i in range(2, 6)]
  assert any(not np.array_equal(a.numpy(), o) for o in others)


def test_inception_crop_of_the_full_area_is_a_plain_resize():
  square = tf.constant(np.random.default_rng(2).integers(0, 256, (24, 24, 3), np.uint8))
  out = preprocess.inception_crop(square, 8, area_range=(1.0, 1.0), seed=_seed(3))
  np.testing.assert_array_equal(out.numpy(), preprocess.resize(square, 8).numpy())


def test_fused_decode_and_crop_picks_the_same_box_as_decode_then_crop():
  pixels = np.random.default_rng(3).integers(0, 256, (48, 64, 3), np.uint8)
  jpeg = _encode(pixels, "JPEG", quality=90, subsampling=0)  # 4:4:4: crop decoding is exact.
  png = _encode(pixels, "PNG")
  for data in (jpeg, png):
    for i in range(4):
      fused = preprocess.decode_jpeg_and_inception_crop(data, 16, seed=_seed(i))
      unfused = preprocess.inception_crop(preprocess.decode(data), 16, seed=_seed(i))
      np.testing.assert_array_equal(fused.numpy(), unfused.numpy())


# ----------------------------------------------------------------------------- values, labels

def test_value_range_maps_0_to_minus_1_and_255_to_1():
  out = preprocess.value_range(tf.constant([0, 255, 51], tf.uint8))
  assert out.dtype == tf.float32
  np.testing.assert_allclose(out.numpy(), [-1.0, 1.0, -0.6], atol=1e-6)
  np.testing.assert_allclose(
      preprocess.value_range(tf.constant([0, 255], tf.uint8), 0.0, 1.0).numpy(), [0.0, 1.0])


def test_onehot_with_label_smoothing():
  np.testing.assert_allclose(preprocess.onehot(2, 4).numpy(), [0, 0, 1, 0])
  np.testing.assert_allclose(preprocess.onehot(2, 4, 0.2).numpy(), [0.05, 0.05, 0.85, 0.05])


def test_multi_hot_with_label_smoothing_and_no_labels():
  np.testing.assert_allclose(preprocess.multi_hot([3, 0, 3], 5).numpy(), [1, 0, 0, 1, 0])
  np.testing.assert_allclose(preprocess.multi_hot([1], 4, 0.2).numpy(), [0.05, 0.85, 0.05, 0.05])
  np.testing.assert_allclose(preprocess.multi_hot(tf.zeros([0], tf.int32), 3).numpy(), [0, 0, 0])


def test_label_ops_refuse_labels_out_of_range():
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=5"):
    preprocess.multi_hot([5], 5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=3"):
    preprocess.onehot(3, 3)


# ----------------------------------------------------------------------------- eager == tf.data

OPS = {
    "decode": lambda x, s: preprocess.decode(x),
    "decode_jpeg_and_inception_crop": lambda x, s: preprocess.decode_jpeg_and_inception_crop(
        x, 10, seed=s),
    "inception_crop": lambda x, s: preprocess.inception_crop(preprocess.decode(x), 10, seed=s),
    "resize": lambda x, s: preprocess.resize(preprocess.decode(x), 9),
    "resize_small": lambda x, s: preprocess.resize_small(preprocess.decode(x), 9),
    "central_crop": lambda x, s: preprocess.central_crop(preprocess.decode(x), 9),
    "flip_lr": lambda x, s: preprocess.flip_lr(preprocess.decode(x), s),
    "value_range": lambda x, s: preprocess.value_range(preprocess.decode(x)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_inside_tf_data_match_eager(name):
  jpeg = _encode(np.random.default_rng(4).integers(0, 256, (20, 24, 3), np.uint8), "JPEG")
  seeds = tf.constant([[i, 7] for i in range(4)], tf.int64)
  fn = OPS[name]
  in_graph = list(tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: fn(tf.constant(jpeg), s)).as_numpy_iterator())
  for seed, out in zip(seeds, in_graph):
    np.testing.assert_array_equal(out, fn(tf.constant(jpeg), seed).numpy())


def test_label_ops_inside_tf_data_match_eager():
  labels = tf.ragged.constant([[0], [2, 4], [], [1, 1]])
  ds = tf.data.Dataset.from_tensor_slices((labels, tf.constant([0, 3, 1, 4]))).map(
      lambda many, one: (preprocess.multi_hot(many, 5, 0.1), preprocess.onehot(one, 5, 0.1)))
  for (multi, hot), many, one in zip(ds.as_numpy_iterator(), labels, [0, 3, 1, 4]):
    np.testing.assert_array_equal(multi, preprocess.multi_hot(many, 5, 0.1).numpy())
    np.testing.assert_array_equal(hot, preprocess.onehot(one, 5, 0.1).numpy())
