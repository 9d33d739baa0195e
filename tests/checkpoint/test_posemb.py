"""resize_posemb matches the reference (scipy.ndimage.zoom, order=1) and rejects non-square grids;
resize_posemb_1d interpolates the same rows as one sequence, which is another table."""
import numpy as np
import pytest
from scipy import ndimage

from vit_jax.checkpoint import resize_posemb
from vit_jax.checkpoint.posemb import resize_posemb_1d


def scipy_reference(posemb, num_tokens, has_class_token):
  """The reference vit_jax interpolate_posembed, written out with scipy."""
  num_extra = 1 if has_class_token else 0
  token, grid = posemb[:, :num_extra], posemb[0, num_extra:]
  old, new = int(np.sqrt(len(grid))), int(np.sqrt(num_tokens - num_extra))
  grid = grid.reshape(old, old, -1)
  grid = ndimage.zoom(grid, (new / old, new / old, 1), order=1).reshape(1, new * new, -1)
  return np.concatenate([token, grid], axis=1)


@pytest.mark.parametrize("has_class_token", [True, False])
@pytest.mark.parametrize("old,new", [(14, 24), (7, 12), (24, 14), (4, 7)])
def test_matches_scipy_zoom(old, new, has_class_token):
  extra = int(has_class_token)
  posemb = np.random.default_rng(old * 100 + new).normal(size=(1, old * old + extra, 8))
  posemb = posemb.astype(np.float32)
  got = resize_posemb(posemb, new * new + extra, has_class_token)
  want = scipy_reference(posemb, new * new + extra, has_class_token)
  assert got.shape == (1, new * new + extra, 8)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(got[:, :extra], posemb[:, :extra])


def test_golden_half_step_lattice():
  posemb = np.concatenate([[0.0], np.arange(1, 17)]).astype(np.float32).reshape(1, 17, 1)
  got = resize_posemb(posemb, 1 + 49, has_class_token=True)
  assert got[0, 0, 0] == 0
  rows = got[0, 1:, 0].reshape(7, 7)
  want = np.array([[1 + 2 * r + 0.5 * c for c in range(7)] for r in range(7)], np.float32)
  np.testing.assert_array_equal(rows, want)
  np.testing.assert_array_equal(rows[0], [1, 1.5, 2, 2.5, 3, 3.5, 4])
  np.testing.assert_array_equal(rows[-1], [13, 13.5, 14, 14.5, 15, 15.5, 16])


def test_single_position_broadcasts():
  posemb = np.array([[[9.0, 9.0], [1.0, 2.0]]], np.float32)  # cls + a 1x1 grid.
  got = resize_posemb(posemb, 5, has_class_token=True)
  np.testing.assert_array_equal(got, [[[9, 9], [1, 2], [1, 2], [1, 2], [1, 2]]])


def test_same_size_is_identity():
  posemb = np.random.default_rng(0).normal(size=(1, 17, 4)).astype(np.float32)
  np.testing.assert_array_equal(resize_posemb(posemb, 17, True), posemb)


def test_non_square_grid_is_a_clear_error():
  with pytest.raises(ValueError, match="15 patch tokens do not form a square grid"):
    resize_posemb(np.zeros((1, 16, 4), np.float32), 50, has_class_token=True)
  with pytest.raises(ValueError, match="target of 51 tokens.*square"):
    resize_posemb(np.zeros((1, 17, 4), np.float32), 51, has_class_token=True)
  with pytest.raises(ValueError, match=r"shape \(1, tokens, hidden\)"):
    resize_posemb(np.zeros((2, 17, 4), np.float32), 50, has_class_token=True)


def test_a_2x2_grid_to_4x4_in_2d_and_as_one_sequence():
  posemb = np.array([9, 0, 1, 2, 3], np.float32).reshape(1, 5, 1)  # cls 9, grid [[0, 1], [2, 3]].
  two_d = resize_posemb(posemb, 17, has_class_token=True)
  one_d = resize_posemb_1d(posemb, 17, has_class_token=True)
  assert two_d[0, 0, 0] == one_d[0, 0, 0] == 9
  # 2D: the value at grid position (y, x) of the 4x4 grid is 2y/3 + x/3, corners kept.
  np.testing.assert_allclose(two_d[0, 1:, 0].reshape(4, 4),
                             [[2 * y / 3 + x / 3 for x in range(4)] for y in range(4)], atol=1e-6)
  # 1D: the 4 rows 0, 1, 2, 3 spread over 16 positions, i / 5: the second grid row starts at 0.8,
  # between the first row's values, where 2D puts 2/3 (the first row's first value plus a row).
  np.testing.assert_allclose(one_d[0, 1:, 0], [i / 5 for i in range(16)], atol=1e-6)
  assert one_d.dtype == two_d.dtype == np.float32


def test_1d_needs_no_square_grid_and_keeps_the_end_rows():
  posemb = np.random.default_rng(0).normal(size=(1, 5, 3)).astype(np.float32)  # no class token
  got = resize_posemb_1d(posemb, 7, has_class_token=False)
  assert got.shape == (1, 7, 3)
  np.testing.assert_allclose(got[0, [0, -1]], posemb[0, [0, -1]], atol=1e-6)
  np.testing.assert_allclose(got[0, 3], (posemb[0, 2]), atol=1e-6)  # 3 of 6 steps = row 2 of 4
  with pytest.raises(ValueError, match=r"shape \(1, tokens, hidden\)"):
    resize_posemb_1d(np.zeros((17, 4), np.float32), 50, has_class_token=True)
