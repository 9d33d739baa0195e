"""Specification of the patch-embedding filters' principal components (Figure 7, left): PCA over the
D filters in the P*P*C pixel space, components orthonormal and ordered by the variance they carry."""
import numpy as np
import pytest

from vit_jax.analysis.filters import PAPER_COUNT, for_display, principal_components


def test_components_are_orthonormal_pixel_space_directions_ordered_by_variance():
  kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 64))
  components, ratio = principal_components(kernel)
  assert components.shape == (PAPER_COUNT, 4, 4, 3) and ratio.shape == (PAPER_COUNT,)
  flat = components.reshape(PAPER_COUNT, -1)
  np.testing.assert_allclose(flat @ flat.T, np.eye(PAPER_COUNT), atol=1e-5)
  assert np.all(np.diff(ratio) <= 0) and 0 < ratio.sum() <= 1


def test_filters_spread_along_two_known_directions_give_those_directions_in_order():
  """Filters = a mean filter + 3 a_i u + b_i v, with u, v orthonormal and a, b orthogonal +-1 codes:
  the variance is 9:1 along u and v and zero elsewhere, so the components are u then v (signs fixed
  so that the largest pixel is positive) and the ratios 0.9, 0.1, then 0."""
  rng = np.random.default_rng(1)
  u, v = np.linalg.qr(rng.normal(size=(48, 2)))[0].T
  a = np.tile([1.0, -1.0], 4)
  b = np.repeat([1.0, -1.0], 4)
  points = rng.normal(size=48) + 3 * a[:, None] * u + b[:, None] * v  # (8 filters, 48 pixels)
  components, ratio = principal_components(points.T.reshape(4, 4, 3, 8), count=3)
  for got, want in zip(components.reshape(3, 48)[:2], (u, v)):
    want = want * np.sign(want[np.abs(want).argmax()])
    np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(ratio, [0.9, 0.1, 0.0], atol=1e-6)


def test_the_count_is_capped_by_the_filters_and_the_pixels_and_bad_kernels_are_named():
  components, _ = principal_components(np.ones((2, 2, 3, 5)) + np.arange(5), count=28)
  assert components.shape == (5, 2, 2, 3)  # min(28, D=5, P*P*C=12)
  with pytest.raises(ValueError, match=r"expected a patch-embedding kernel of shape \(P, P, channels, "
                                       r"D\), got \(16, 8\)"):
    principal_components(np.zeros((16, 8)))


def test_each_component_is_scaled_to_the_unit_range_alone_for_display():
  components = np.stack([np.linspace(-3, 1, 12).reshape(2, 2, 3), np.full((2, 2, 3), 7.0)])
  shown = for_display(components)
  assert shown[0].min() == 0 and shown[0].max() == 1
  np.testing.assert_array_equal(shown[1], 0.5)  # a constant component is grey
