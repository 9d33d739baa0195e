"""The principal components of a ViT's patch-embedding filters (the ViT paper's Figure 7, left).

The patch embedding is a linear map from a P x P x 3 patch to D features: D filters, each a point in
the P*P*3 pixel space. Their principal components (directions of that space, ordered by how much of
the filters' variance they carry) show what the first layer looks for, as P x P RGB images.
"""
import numpy as np

PAPER_COUNT = 28  # the paper shows the first 28 components


def principal_components(kernel: np.ndarray, count: int = PAPER_COUNT) -> tuple[np.ndarray, np.ndarray]:
  """(components (k, P, P, C), explained variance ratio (k,)) of the filters of `kernel` (P, P, C, D).

  PCA over the D filters (centred on their mean): components are orthonormal in the P*P*C pixel
  space, the first carrying the most variance; k = min(count, D, P*P*C). Each component's sign is
  fixed so that its largest-magnitude pixel is positive (PCA leaves it arbitrary).
  """
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 4:
    raise ValueError(f"expected a patch-embedding kernel of shape (P, P, channels, D), got {kernel.shape}")
  if count < 1:
    raise ValueError(f"count must be at least 1, got {count}")
  height, width, channels, filters = kernel.shape
  points = kernel.reshape(height * width * channels, filters).T  # (D, P*P*C): one row per filter
  centred = points - points.mean(axis=0, keepdims=True)
  _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)
  k = min(count, *directions.shape)
  directions = directions[:k]
  largest = np.take_along_axis(directions, np.abs(directions).argmax(axis=1)[:, None], axis=1)
  directions = directions * np.where(largest < 0, -1.0, 1.0)
  variance = singular_values ** 2
  ratio = variance[:k] / max(variance.sum(), np.finfo(np.float64).tiny)
  return directions.reshape(k, height, width, channels).astype(np.float32), ratio.astype(np.float32)


def for_display(components: np.ndarray) -> np.ndarray:
  """Each component min-max scaled to [0, 1] on its own (a component's scale and offset carry no
  meaning), as the paper shows them; a constant component becomes 0.5 grey."""
  components = np.asarray(components, np.float32)
  axes = tuple(range(1, components.ndim))
  low = components.min(axis=axes, keepdims=True)
  span = components.max(axis=axes, keepdims=True) - low
  return np.where(span > 0, (components - low) / np.where(span > 0, span, 1.0), 0.5)
