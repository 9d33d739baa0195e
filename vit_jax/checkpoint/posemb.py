"""Position-embedding resizing for fine-tuning at another resolution (the vit_jax semantics, no scipy).

`resize_posemb` matches `scipy.ndimage.zoom(grid, (new/old, new/old, 1), order=1)` as used by the
reference codebase: separable linear interpolation with align-corners semantics, computed in float64
and cast back. `resize_posemb_1d` interpolates the same rows as one flat sequence, as a loader unaware
of the 2D layout would: the baseline that shows what the 2D resize is worth.
"""
import math

import numpy as np


def _grid_size(num_tokens: int, what: str, has_class_token: bool) -> int:
  """Side of the square grid holding `num_tokens` patches, or a ValueError saying why there is none."""
  side = math.isqrt(num_tokens) if num_tokens > 0 else 0
  if num_tokens <= 0 or side * side != num_tokens:
    hint = ("the class-token row was split off first; pass has_class_token=False if the model uses "
            "'gap' pooling" if has_class_token else
            "pass has_class_token=True if the first row is a class token")
    raise ValueError(
        f"{what}: {num_tokens} patch tokens do not form a square grid; only square position grids "
        f"(e.g. 14x14 = 196) can be resized ({hint}).")
  return side


def _interpolate_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
  """Linear interpolation along one axis with corners mapped to corners (scipy order=1, grid_mode=False)."""
  old = x.shape[axis]
  if old == 1:  # A single sample broadcasts to every output position.
    return np.repeat(x, size, axis=axis)
  zoom = (old - 1) / (size - 1) if size > 1 else 1.0
  coords = np.arange(size, dtype=np.float64) * zoom
  low = np.clip(np.floor(coords).astype(np.int64), 0, old - 2)
  frac = coords - low
  shape = [1] * x.ndim
  shape[axis] = size
  frac = frac.reshape(shape)
  return (np.take(x, low, axis=axis) * (1.0 - frac) + np.take(x, low + 1, axis=axis) * frac)


def _split_class_token(posemb, has_class_token: bool) -> tuple[np.ndarray, np.ndarray, int]:
  """(class-token rows, patch rows, number of class-token rows) of a (1, T, D) table."""
  posemb = np.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f"position embedding must have shape (1, tokens, hidden), got {posemb.shape}")
  num_extra = 1 if has_class_token else 0
  return posemb[:, :num_extra], posemb[0, num_extra:], num_extra


def resize_posemb(posemb, num_tokens: int, has_class_token: bool) -> np.ndarray:
  """Resizes a (1, T, D) position embedding to (1, num_tokens, D) by 2D interpolation of its grid.

  The class-token row (when `has_class_token`) is carried over unchanged; the remaining rows are a
  row-major square grid, resized with align-corners bilinear interpolation. Returns a numpy array of
  the input dtype.
  """
  token, grid, num_extra = _split_class_token(posemb, has_class_token)
  old = _grid_size(grid.shape[0], f"checkpoint position embedding {np.shape(posemb)}", has_class_token)
  new = _grid_size(num_tokens - num_extra, f"target of {num_tokens} tokens", has_class_token)
  grid = grid.reshape(old, old, -1).astype(np.float64)
  grid = _interpolate_axis(_interpolate_axis(grid, new, 0), new, 1)
  grid = grid.astype(token.dtype).reshape(1, new * new, -1)
  return np.concatenate([token, grid], axis=1)


def resize_posemb_1d(posemb, num_tokens: int, has_class_token: bool) -> np.ndarray:
  """Resizes a (1, T, D) position embedding to (1, num_tokens, D) as a 1D sequence, ignoring its grid.

  The class-token row (when `has_class_token`) is carried over unchanged; the patch rows, in their
  row-major order, are linearly interpolated to the new count with the first and last rows kept, so
  rows of one grid line land on positions of another. Any row counts work (no square grid needed).
  """
  token, rows, num_extra = _split_class_token(posemb, has_class_token)
  if rows.shape[0] < 1 or num_tokens - num_extra < 1:
    raise ValueError(f"cannot resize a position embedding of {rows.shape[0]} patch rows to "
                     f"{num_tokens - num_extra}: both need at least one patch row")
  rows = _interpolate_axis(rows.astype(np.float64), num_tokens - num_extra, 0)
  return np.concatenate([token, rows.astype(token.dtype)[None]], axis=1)
