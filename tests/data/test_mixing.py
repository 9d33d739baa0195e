"""Specification of mixup and cutmix: exact mixes for a given ratio or box; seeded ratio draws."""
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import mixing

IMAGES = np.stack([np.full((4, 6, 1), v, np.float32) for v in (0.0, 1.0, 2.0)])  # (3, 4, 6, 1)
LABELS = np.eye(3, dtype=np.float32)


def _seed(i):
  return tf.constant([i, 11], tf.int64)


def test_mix_blends_each_example_with_its_mirror():
  images, labels = mixing.mix(IMAGES, LABELS, 0.75)
  np.testing.assert_allclose(images[:, 0, 0, 0], [0.5, 1.0, 1.5])  # 0.75 x + 0.25 mirrored x
  np.testing.assert_allclose(labels, [[0.75, 0, 0.25], [0, 1, 0], [0.25, 0, 0.75]])


def test_paste_copies_the_box_from_the_mirror_and_mixes_labels_by_area():
  images, labels = mixing.paste(IMAGES, LABELS, tf.constant([1, 2, 2, 3]))  # 6 of 24 pixels.
  expected = IMAGES.copy()
  expected[:, 1:3, 2:5] = IMAGES[::-1, 1:3, 2:5]
  np.testing.assert_array_equal(images, expected)
  np.testing.assert_allclose(labels, [[0.75, 0, 0.25], [0, 1, 0], [0.25, 0, 0.75]])


def test_cutmix_box_covers_one_minus_ratio_and_stays_inside():
  for i in range(20):
    top, left, height, width = mixing.cutmix_box(40, 60, 0.75, _seed(i)).numpy()
    assert 0 <= top and top + height <= 40 and 0 <= left and left + width <= 60
    assert height <= 20 and width <= 30  # sqrt(1 - 0.75) of each side, clipped.
  centred = [mixing.cutmix_box(40, 60, 0.75, _seed(i)).numpy() for i in range(20)]
  assert any(b[2] == 20 and b[3] == 30 for b in centred)


def test_beta_draws_are_seeded_and_follow_beta():
  draws = np.array([mixing.sample_beta(1.0, _seed(i)).numpy() for i in range(400)])
  assert draws.min() >= 0 and draws.max() <= 1
  assert abs(draws.mean() - 0.5) < 0.05 and abs(draws.var() - 1 / 12) < 0.02  # Beta(1,1) = U(0,1)
  assert mixing.sample_beta(0.2, _seed(3)).numpy() == mixing.sample_beta(0.2, _seed(3)).numpy()


@pytest.mark.parametrize("op", [mixing.mixup, mixing.cutmix])
def test_mixing_ops_keep_label_mass_and_are_the_same_inside_tf_data(op):
  batch = {"image": tf.constant(IMAGES), "label": tf.constant(LABELS)}
  eager = [op(batch, 1.0, seed=_seed(i)) for i in range(4)]
  for out in eager:
    np.testing.assert_allclose(out["label"].numpy().sum(-1), 1.0, rtol=1e-6)
  seeds = tf.constant([[i, 11] for i in range(4)], tf.int64)
  in_graph = list(tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: op(batch, 1.0, seed=s)).as_numpy_iterator())
  for a, b in zip(eager, in_graph):
    np.testing.assert_array_equal(a["image"].numpy(), b["image"])
    np.testing.assert_array_equal(a["label"].numpy(), b["label"])


def test_mixing_needs_float_targets():
  with pytest.raises(ValueError, match="add onehot"):
    mixing.mixup({"image": IMAGES, "label": tf.constant([0, 1, 2])}, 0.2, seed=_seed(0))
