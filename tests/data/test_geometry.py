"""Specification of tracked geometry: after any chain of crop and flip ops, per example or per batch,
(BOX, FLIPPED) describe the image exactly: it is flip?(crop(source, BOX)) resized."""
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import geometry, pp, randaugment

SOURCE = np.arange(24 * 40 * 3, dtype=np.float32).reshape(24, 40, 3) % 251  # not symmetric


def region(source: np.ndarray, box, mirrored: bool, size: int) -> np.ndarray:
  """flip?(source[box]) resized to size x size, as the ops resize (bilinear, half-pixel)."""
  height, width = source.shape[:2]
  top, left, box_h, box_w = (round(float(v) * n) for v, n in zip(box, (height, width, height, width)))
  crop = tf.image.resize(source[top:top + box_h, left:left + box_w], [size, size]).numpy()
  return crop[:, ::-1] if mirrored else crop


@pytest.mark.parametrize("spec", [
    "inception_crop(12, area_min=0.2)|flip_lr",
    "flip_lr|inception_crop(12, area_min=0.2)",
    "resize_small(30)|central_crop(24)|flip_lr|inception_crop(12, area_min=0.3)|flip_lr",
])
def test_example_ops_record_the_region_their_image_shows(spec):
  preprocess = pp.build(spec)
  seen_flips = set()
  for seed in range(12):
    out = preprocess(geometry.start({"image": tf.constant(SOURCE)}), tf.constant([seed, 7]))
    box, mirrored = out[geometry.BOX].numpy(), bool(out[geometry.FLIPPED])
    seen_flips.add(mirrored)
    if "resize_small" not in spec:  # rounding of the resize moves edges by a fraction of a pixel
      np.testing.assert_allclose(out["image"].numpy(), region(SOURCE, box, mirrored, 12), atol=1e-3)
    assert 0 <= box[0] and 0 <= box[1] and box[0] + box[2] <= 1 + 1e-6 and box[1] + box[3] <= 1 + 1e-6
  assert seen_flips == {False, True}


def test_chained_crops_compose_into_one_box_in_the_source():
  """central_crop(24) of a 24x40 image keeps columns 8..32; a 30->24 resize_small keeps fractions."""
  out = pp.build("central_crop(24)")(geometry.start({"image": tf.constant(SOURCE)}))
  np.testing.assert_allclose(out[geometry.BOX], [0.0, 8 / 40, 1.0, 24 / 40])


def test_a_crop_of_a_mirrored_image_is_the_mirrored_box_of_the_source():
  example = geometry.flipped(geometry.start({}), tf.constant(True))
  out = geometry.cropped(example, 0, 0, 10, 10, 20, 40)  # the left quarter of what is shown
  np.testing.assert_allclose(out[geometry.BOX], [0.0, 0.75, 0.5, 0.25])
  assert bool(out[geometry.FLIPPED])


def test_batch_ops_record_each_rows_region():
  images = tf.constant(np.stack([SOURCE, SOURCE[::-1]]))
  batch_ops = pp.build_batch("inception_crop(12, area_min=0.2)|flip_lr")
  for seed in range(4):
    batch = {"image": images, geometry.BOX: tf.constant([geometry.WHOLE_IMAGE] * 2),
             geometry.FLIPPED: tf.constant([False, False])}
    out = batch_ops(batch, tf.constant([seed, 1]))
    for row in range(2):
      want = region(images[row].numpy(), out[geometry.BOX][row].numpy(),
                    bool(out[geometry.FLIPPED][row]), 12)
      np.testing.assert_allclose(out["image"][row].numpy(), want, atol=1e-3)


def test_untracked_examples_pass_through_unchanged():
  out = pp.build("inception_crop(12)|flip_lr")({"image": tf.constant(SOURCE)}, tf.constant([0, 1]))
  assert set(out) == {"image"}



def test_randaug_records_its_warp_after_the_crop_and_flip():
  image = tf.constant(SOURCE.astype(np.uint8))
  seed = tf.constant([4, 2])
  tracked = pp.build("inception_crop(12)|flip_lr|randaug(2, 9)")(
      geometry.start({"image": image}), seed)
  plain = pp.build("inception_crop(12)|flip_lr")(geometry.start({"image": image}), seed)
  crop_seed = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)[2]
  np.testing.assert_allclose(tracked[geometry.WARP],
                             randaugment.warp([12, 12, 3], 2, 9, seed=crop_seed))
  for name in (geometry.BOX, geometry.FLIPPED):  # randaug moves pixels within the crop only
    np.testing.assert_array_equal(tracked[name], plain[name])


def test_crops_after_a_warp_are_refused():
  geometry.check_order(["decode", "inception_crop", "flip_lr", "randaug"], [])
  with pytest.raises(ValueError, match="flip_lr after randaug: with score maps, crops and flips "
                                       "must come before RandAugment"):
    geometry.check_order(["decode", "randaug"], ["flip_lr"])
