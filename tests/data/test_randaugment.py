"""Specification of RandAugment: each op against PIL or a hand-computed expectation; seeded choice."""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import pytest
import tensorflow as tf

from vit_jax.data import randaugment


@pytest.fixture(scope="module")
def photo():
  """A smooth 24x32 RGB image (a random 6x8 image, upsampled) with a narrowed value range."""
  rng = np.random.default_rng(0)
  small = rng.integers(30, 220, (6, 8, 3), np.uint8)
  return np.asarray(Image.fromarray(small).resize((32, 24), Image.BILINEAR))


def _ours(image, name, magnitude, sign=1.0):
  return randaugment.apply_op(tf.constant(image), name, magnitude, sign).numpy()


ENHANCE = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
           "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}


@pytest.mark.parametrize("name", sorted(ENHANCE))
@pytest.mark.parametrize("magnitude,sign", [(5, 1.0), (10, -1.0), (3, -1.0)])
def test_enhance_ops_match_pil(photo, name, magnitude, sign):
  factor = 1.0 + sign * 0.9 * magnitude / 10
  expected = np.asarray(ENHANCE[name](Image.fromarray(photo)).enhance(factor))
  np.testing.assert_allclose(_ours(photo, name, magnitude, sign), expected, atol=1)


@pytest.mark.parametrize("name,pil", [
    ("autocontrast", ImageOps.autocontrast), ("equalize", ImageOps.equalize)])
def test_histogram_ops_match_pil(photo, name, pil):
  expected = np.asarray(pil(Image.fromarray(photo)))
  np.testing.assert_allclose(_ours(photo, name, 7), expected, atol=1)
  flat = np.full((4, 4, 3), 90, np.uint8)  # One value per channel: both leave it alone.
  np.testing.assert_array_equal(_ours(flat, name, 7), np.asarray(pil(Image.fromarray(flat))))


def test_solarize_and_posterize_match_pil_at_their_thresholds(photo):
  # Magnitude 5: threshold 128 and 6 bits.
  np.testing.assert_array_equal(_ours(photo, "solarize", 5),
                                np.asarray(ImageOps.solarize(Image.fromarray(photo), 128)))
  np.testing.assert_array_equal(_ours(photo, "posterize", 5),
                                np.asarray(ImageOps.posterize(Image.fromarray(photo), 6)))
  np.testing.assert_array_equal(_ours(photo, "solarize", 0), photo)
  np.testing.assert_array_equal(_ours(photo, "posterize", 0), photo)


def test_translate_moves_whole_pixels_and_fills_gray():
  image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
  out = _ours(image, "translate_x", 10 / 4.5)  # 10% of the width: 1 pixel right.
  np.testing.assert_array_equal(out[:, 1:], image[:, :-1])
  np.testing.assert_array_equal(out[:, 0], 128)
  out = _ours(image, "translate_y", 2 * 10 / 4.5, sign=-1.0)  # 2 pixels up.
  np.testing.assert_array_equal(out[:-2], image[2:])
  np.testing.assert_array_equal(out[-2:], 128)


def test_shear_x_shifts_row_y_by_shear_times_y():
  image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
  out = _ours(image, "shear_x", 0.2 / 0.3 * 10)  # shear 0.2: input x = x + 0.2 y, rounded.
  for y in range(8):
    for x in range(8):
      source = int(np.round(x + 0.2 * y))  # No ties for y < 8.
      expected = image[y, source] if source < 8 else [128] * 3
      np.testing.assert_array_equal(out[y, x], expected)


def test_rotate_by_90_degrees_is_rot90_counter_clockwise():
  image = np.random.default_rng(1).integers(0, 256, (6, 6, 3), np.uint8)
  np.testing.assert_array_equal(_ours(image, "rotate", 30.0), np.rot90(image))
  np.testing.assert_array_equal(_ours(image, "rotate", 30.0, sign=-1.0), np.rot90(image, -1))


def test_identity_and_magnitude_zero_geometry_change_nothing(photo):
  for name in ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
    np.testing.assert_array_equal(_ours(photo, name, 0), photo)


def test_randaugment_applies_the_ops_its_seed_draws(photo):
  seed = tf.constant([5, 1], tf.int64)
  indices, signs = randaugment.choices(2, seed)
  expected = photo
  for index, sign in zip(indices.numpy(), signs.numpy()):
    expected = _ours(expected, randaugment.NAMES[index], 9, float(sign))
  out = randaugment.randaugment(tf.constant(photo), 2, 9, seed=seed)
  assert out.shape == photo.shape and out.dtype == tf.uint8
  np.testing.assert_array_equal(out.numpy(), expected)


def test_randaugment_draws_every_op_and_is_the_same_inside_tf_data(photo):
  drawn = {int(randaugment.choices(1, tf.constant([i, 0], tf.int64))[0][0]) for i in range(200)}
  assert drawn == set(range(len(randaugment.NAMES))) and len(randaugment.NAMES) == 14
  seeds = tf.constant([[i, 3] for i in range(6)], tf.int64)
  in_graph = list(tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: randaugment.randaugment(tf.constant(photo), 2, 10, seed=s)).as_numpy_iterator())
  for seed, out in zip(seeds, in_graph):
    np.testing.assert_array_equal(
        out, randaugment.randaugment(tf.constant(photo), 2, 10, seed=seed).numpy())


def test_randaugment_needs_uint8():
  with pytest.raises(ValueError, match="before value_range"):
    randaugment.randaugment(tf.zeros([4, 4, 3]), seed=tf.constant([0, 0], tf.int64))


def _coordinates(height=24, width=32):
  """Red = 6 x column, green = 8 x row, blue 255: a pixel's value says where it was; fill has blue 128."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([6 * cols, 8 * rows, np.full_like(rows, 255)], axis=-1).astype(np.uint8)


def _where_from(image):
  """(column, row) each output pixel came from, and which ones came from the image (not fill)."""
  return image[..., 0] / 6.0, image[..., 1] / 8.0, image[..., 2] == 255


def _predicted(warp, height, width):
  """(column, row) in pixels that warp ([a..f] in fractions) says each output pixel comes from."""
  a, b, c, d, e, f = np.asarray(warp, np.float64)
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  u, v = (cols + 0.5) / width, (rows + 0.5) / height
  return (a * u + b * v + c) * width - 0.5, (d * u + e * v + f) * height - 0.5


@pytest.mark.parametrize("layers, pixels", [(1, 0.501), (2, 1.2)])
def test_the_warp_of_a_seed_says_where_every_pixel_of_its_image_comes_from(layers, pixels):
  """Over seeds that draw only geometric ops (composed) or only colour ops (the identity). Each op
  takes the nearest pixel: one is off by at most half a pixel, two by half a pixel more, moved."""
  image = tf.constant(_coordinates())
  geometric = [randaugment.NAMES.index(n) for n in randaugment.MATRICES]
  checked = {"geometric": 0, "identity": 0}
  for seed in range(300):
    indices, _ = randaugment.choices(layers, tf.constant([seed, 0]))
    kind = ("geometric" if all(int(i) in geometric for i in indices) else
            "identity" if not any(int(i) in geometric for i in indices) else None)
    if kind is None or checked[kind] >= 4:
      continue
    checked[kind] += 1
    warp = randaugment.warp(tf.shape(image), layers, 7.0, seed=tf.constant([seed, 0]))
    if kind == "identity":
      np.testing.assert_allclose(warp, [1, 0, 0, 0, 1, 0])
      continue
    out = randaugment.randaugment(image, layers, 7.0, seed=tf.constant([seed, 0])).numpy()
    col, row, real = _where_from(out)
    want_col, want_row = _predicted(warp.numpy(), 24, 32)
    assert real.mean() > 0.3
    assert np.abs(col - want_col)[real].max() <= pixels
    assert np.abs(row - want_row)[real].max() <= pixels
  assert checked == {"geometric": 4, "identity": 4}
