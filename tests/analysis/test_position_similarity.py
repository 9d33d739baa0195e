"""Specification of position-embedding similarity (Figure 7, centre): for every position of the patch
grid, the cosine similarity of its embedding with every position's, the class token's row left out."""
import numpy as np
import pytest

from vit_jax.analysis.position_similarity import (cosine_similarity, mean_by_distance,
                                                  most_similar_other, neighbour_fraction)


def smooth_table(side=5, row_rate=0.3, col_rate=0.2):
  """e(r, c) = (cos ar, sin ar, cos bc, sin bc): cos(e(r, c), e(r', c')) = (cos a(r - r') +
  cos b(c - c')) / 2, which falls strictly with |r - r'| and |c - c'| while a, b < pi / (side - 1)."""
  rows, cols = np.divmod(np.arange(side * side), side)
  return np.stack([np.cos(row_rate * rows), np.sin(row_rate * rows),
                   np.cos(col_rate * cols), np.sin(col_rate * cols)], axis=1)[None]


def test_maps_are_laid_out_by_grid_position_and_peak_at_their_own_position():
  """Map [r, c] is position (r, c)'s: it peaks at (r, c) (cosine similarity is at most 1, reached by
  the embedding itself), the matrix is symmetric, and (with b < a) the most similar other position is
  the next one along the row."""
  similarity = cosine_similarity(smooth_table(), class_token=False)
  assert similarity.shape == (5, 5, 5, 5)
  flat = similarity.reshape(25, 25)
  np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-6)
  np.testing.assert_allclose(flat, flat.T, atol=1e-6)
  assert list(flat.argmax(axis=1)) == list(range(25))
  np.testing.assert_allclose(similarity[1, 3, 4, 0], (np.cos(0.3 * 3) + np.cos(0.2 * 3)) / 2, atol=1e-6)
  best = most_similar_other(similarity)
  np.testing.assert_array_equal(best[..., 0], np.arange(5)[:, None] * np.ones((1, 5)))  # same row
  np.testing.assert_array_equal(np.abs(best[..., 1] - np.arange(5)[None, :]), 1)        # next column
  assert neighbour_fraction(similarity) == 1.0
  assert np.all(np.diff(mean_by_distance(similarity)) < 0)


def test_the_class_tokens_embedding_is_left_out():
  table = smooth_table()
  with_class = np.concatenate([np.full((1, 1, 4), 5.0), table], axis=1)
  np.testing.assert_array_equal(cosine_similarity(with_class, class_token=True),
                                cosine_similarity(table, class_token=False))
  with pytest.raises(ValueError, match="26 position embeddings .class token left out. do not form a "
                                       "square grid; the analyses need one"):
    cosine_similarity(with_class, class_token=False)


def test_random_embeddings_have_no_neighbour_structure_to_find():
  """The neighbour fraction is a measurement, not a given: independent random embeddings of a 6x6
  grid put the most similar other position among the neighbours about as often as chance would."""
  table = np.random.default_rng(0).normal(size=(1, 36, 64))
  assert neighbour_fraction(cosine_similarity(table, class_token=False)) < 0.5
