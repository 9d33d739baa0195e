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


# mixup_or_cutmix: one of the two per batch (docs/recipes.md#mixup-cutmix).
DISTINCT = np.random.default_rng(0).uniform(0, 1, (4, 6, 8, 3)).astype(np.float32)  # x != mirror
SMOOTHED = np.eye(4, dtype=np.float32) * 0.9 + 0.1 / 4  # onehot(smoothing=0.1) targets


def _branch(images, labels):
  """'mixup' or 'cutmix' when (images, labels) is exactly that mix of DISTINCT and SMOOTHED."""
  mirror, mirror_labels = DISTINCT[::-1], SMOOTHED[::-1]
  pasted = images == mirror  # cutmix: each pixel is the image's or its mirror's, in one box
  if np.array_equal(images, np.where(pasted, mirror, DISTINCT)) and (pasted == pasted[:1]).all():
    rows, cols = np.nonzero(pasted[0, :, :, 0])
    box = np.zeros(pasted.shape[1:3], bool)
    if rows.size:
      box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    if np.array_equal(box, pasted[0, :, :, 0]):
      ratio = 1 - box.mean()
      np.testing.assert_allclose(labels, ratio * SMOOTHED + (1 - ratio) * mirror_labels, atol=1e-6)
      return "cutmix"
  ratio = (images - mirror) / (DISTINCT - mirror)  # mixup: one convex ratio everywhere
  if np.ptp(ratio) < 1e-3 and 0 <= ratio.mean() <= 1:
    np.testing.assert_allclose(labels, ratio.mean() * SMOOTHED + (1 - ratio.mean()) * mirror_labels,
                               atol=1e-4)
    return "mixup"
  return "neither"


def _mixed_in_tf_data(n, switch_prob, first=0):
  """mixup_or_cutmix(0.8, 1.0, switch_prob) of the same batch under seeds first .. first + n - 1."""
  batch = {"image": tf.constant(DISTINCT), "label": tf.constant(SMOOTHED)}
  seeds = tf.constant([[i, 11] for i in range(first, first + n)], tf.int64)
  return list(tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: mixing.mixup_or_cutmix(batch, 0.8, 1.0, switch_prob, seed=s)).as_numpy_iterator())


def test_mixup_or_cutmix_gives_each_batch_exactly_one_of_them_at_switch_prob_odds():
  outs = _mixed_in_tf_data(200, 0.5)
  branches = [_branch(out["image"], out["label"]) for out in outs]
  assert "neither" not in branches
  # Binomial(200, 0.5): mean 100, sd 7.07; 35 is 5 sd.
  assert abs(branches.count("cutmix") - 100) <= 35
  for out in outs:
    np.testing.assert_allclose(out["label"].sum(-1), 1.0, rtol=1e-6)
  batch = {"image": tf.constant(DISTINCT), "label": tf.constant(SMOOTHED)}
  both = mixing.cutmix(mixing.mixup(batch, 0.8, seed=_seed(0)), 1.0, seed=_seed(1))
  assert _branch(both["image"].numpy(), both["label"].numpy()) == "neither"  # the old sequence


@pytest.mark.parametrize("switch_prob,only", [(0.0, "mixup"), (1.0, "cutmix")])
def test_switch_prob_zero_gives_only_mixup_and_one_only_cutmix(switch_prob, only):
  assert {_branch(out["image"], out["label"]) for out in _mixed_in_tf_data(40, switch_prob)} == {only}


def test_mixup_or_cutmix_is_the_chosen_op_alone_with_its_seed_and_a_function_of_the_seed():
  batch = {"image": tf.constant(DISTINCT), "label": tf.constant(SMOOTHED)}
  chosen = set()
  for i in range(8):
    use_cutmix, op_seed = mixing.choose_cutmix(0.5, _seed(i))
    alone = (mixing.cutmix(batch, 1.0, seed=op_seed) if use_cutmix else
             mixing.mixup(batch, 0.8, seed=op_seed))
    out = mixing.mixup_or_cutmix(batch, 0.8, 1.0, seed=_seed(i))  # switch_prob 0.5 by default
    np.testing.assert_array_equal(out["image"].numpy(), alone["image"].numpy())
    np.testing.assert_array_equal(out["label"].numpy(), alone["label"].numpy())
    chosen.add(bool(use_cutmix))
  assert chosen == {False, True}
  # Seeds 5.. again (as a resumed stream asks for them) repeat the same images, choices included.
  for again, first in zip(_mixed_in_tf_data(3, 0.5, first=5), _mixed_in_tf_data(8, 0.5)[5:]):
    np.testing.assert_array_equal(again["image"], first["image"])


def test_mixup_or_cutmix_refuses_a_missing_branch_or_a_switch_prob_outside_zero_one():
  batch = {"image": IMAGES, "label": LABELS}
  with pytest.raises(ValueError, match="cutmix_alpha > 0.*use mixup\\(alpha\\) or cutmix"):
    mixing.mixup_or_cutmix(batch, 0.8, 0.0, seed=_seed(0))
  with pytest.raises(ValueError, match="switch_prob=1.5 is the probability of cutmix"):
    mixing.mixup_or_cutmix(batch, 0.8, 1.0, 1.5, seed=_seed(0))
  with pytest.raises(ValueError, match="mixup_or_cutmix needs float.*add onehot"):
    mixing.mixup_or_cutmix({"image": IMAGES, "label": tf.constant([0, 1, 2])}, 0.8, 1.0,
                           seed=_seed(0))
