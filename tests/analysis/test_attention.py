"""Specification of mean attention distance (Figure 7, right) and attention rollout, on attention
weights whose answers are known."""
import numpy as np
import pytest

from vit_jax.analysis import attention


def uniform(tokens, batch=1, heads=1):
  return np.full((batch, heads, tokens, tokens), 1.0 / tokens)


def test_patch_centres_are_one_cell_apart_in_pixels():
  np.testing.assert_allclose(attention.patch_distances(2, image_size=8),
                             [[0, 4, 4, 4 * np.sqrt(2)], [4, 0, 4 * np.sqrt(2), 4],
                              [4, 4 * np.sqrt(2), 0, 4], [4 * np.sqrt(2), 4, 4, 0]])


def test_mean_distance_of_known_attention_patterns():
  """Attending to oneself is distance 0; uniform attention gives the mean centre-to-centre distance;
  attending to the opposite corner gives the largest; all in [0, the image diagonal]."""
  pairwise = attention.patch_distances(3, image_size=12)
  self_only = np.eye(9)[None, None]
  corner = np.zeros((1, 1, 9, 9))
  corner[0, 0, 0, 8] = corner[0, 0, 8, 0] = 1.0
  corner[0, 0, 1:8, 4] = 1.0  # the other queries look at the centre
  got = [attention.mean_distance(w, 12, class_token=False)[0, 0]
         for w in (self_only, uniform(9), corner)]
  want = [0.0, pairwise.mean(), (2 * pairwise[0, 8] + pairwise[1:8, 4].sum()) / 9]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert 0 <= min(got) and max(got) <= pairwise.max() < 12 * np.sqrt(2)


def test_the_class_token_has_no_place_on_the_image():
  """With a class token, distances are between patch tokens with each query's patch weights rescaled
  to sum to 1; what the patches pay the class token is reported apart."""
  weights = np.zeros((1, 2, 10, 10))
  weights[..., 0] = 0.5
  weights[..., 1:] = 0.5 / 9  # half to the class token, the rest uniform over the 3x3 patches
  distance = attention.mean_distance(weights, 12, class_token=True)
  np.testing.assert_allclose(distance, attention.patch_distances(3, 12).mean(), rtol=1e-6)
  np.testing.assert_allclose(attention.class_token_share(weights), 0.5)
  with pytest.raises(ValueError, match="10 patch tokens do not form a square grid"):
    attention.mean_distance(weights, 12, class_token=False)


def test_rollout_adds_the_residual_renormalises_and_multiplies_first_to_last():
  everyone_to_first = np.zeros((1, 2, 3, 3))
  everyone_to_first[..., 0] = 1.0
  one = attention.rollout([everyone_to_first])
  np.testing.assert_allclose(one[0], (everyone_to_first[0, 0] + np.eye(3)) / 2)
  np.testing.assert_allclose(attention.rollout([np.eye(3)[None, None]] * 4)[0], np.eye(3))
  two = attention.rollout([everyone_to_first, uniform(3, heads=2)])
  np.testing.assert_allclose(two[0], ((uniform(3)[0, 0] + np.eye(3)) / 2) @ one[0], rtol=1e-6)


def test_rollout_rows_are_distributions_for_any_softmax_weights():
  logits = np.random.default_rng(0).normal(size=(3, 2, 4, 17, 17)) * 3
  layers = list(np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True))
  rolled = attention.rollout(layers)
  assert rolled.shape == (2, 17, 17) and rolled.min() >= 0
  np.testing.assert_allclose(rolled.sum(axis=-1), 1.0, rtol=1e-5)
  maps = attention.rollout_maps(rolled, class_token=True)
  np.testing.assert_array_equal(maps.reshape(2, 16), rolled[:, 0, 1:])
  gap_maps = attention.rollout_maps(rolled[:, 1:, 1:], class_token=False)
  np.testing.assert_allclose(gap_maps.reshape(2, 16), rolled[:, 1:, 1:].mean(axis=1))
  upsampled = attention.upsample(maps, 16)
  assert upsampled.shape == (2, 16, 16) and upsampled.min() >= 0
