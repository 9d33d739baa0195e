"""What attention weights say about a ViT: how far each head looks (the ViT paper's Figure 7,
right) and where the class token's information comes from (attention rollout, its Figures 6 and 14).

Weights are (batch, heads, queries, keys) softmax rows of one layer, as the attention modules sow them
(models/layers.py, ATTENTION_WEIGHTS). With a class token (token 0) it has no place in the image:
distances are taken between patch tokens only, and rollout maps are read off its row.
"""
from typing import Sequence

import jax
import numpy as np

from vit_jax.analysis.position_similarity import grid_side


def _check(weights: np.ndarray) -> np.ndarray:
  weights = np.asarray(weights, np.float64)
  if weights.ndim != 4 or weights.shape[2] != weights.shape[3]:
    raise ValueError(f"expected attention weights of shape (batch, heads, tokens, tokens), got "
                     f"{weights.shape}")
  return weights


def patch_distances(side: int, image_size: int) -> np.ndarray:
  """(side^2, side^2) distances in pixels between the centres of the patches of a side x side grid
  over an image_size x image_size image (row-major token order, as the patch embedding flattens)."""
  cell = image_size / side
  rows, cols = np.divmod(np.arange(side * side), side)
  return cell * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])


def mean_distance(weights: np.ndarray, image_size: int, class_token: bool) -> np.ndarray:
  """(batch, heads) mean attention distance in pixels: for each query patch, the distance to every
  patch weighted by the attention it pays it, averaged over the query patches.

  With a class token, queries and keys are the patch tokens only and each query's weights over the
  patches are rescaled to sum to 1 (the class token has no position; class_token_share says how much
  it draws). A query that attends only to the class token counts as distance 0. The result lies in
  [0, the largest centre-to-centre distance] < the image diagonal.
  """
  weights = _check(weights)
  first = 1 if class_token else 0
  patches = weights[:, :, first:, first:]
  side = grid_side(patches.shape[-1])
  total = patches.sum(axis=-1, keepdims=True)
  patches = np.divide(patches, total, out=np.zeros_like(patches), where=total > 0)
  per_query = np.einsum("bhqk,qk->bhq", patches, patch_distances(side, image_size))
  return per_query.mean(axis=-1).astype(np.float32)


def class_token_share(weights: np.ndarray) -> np.ndarray:
  """(batch, heads) the mean weight a patch query pays the class token (token 0)."""
  weights = _check(weights)
  return weights[:, :, 1:, 0].mean(axis=-1).astype(np.float32)


def rollout(layers: Sequence[np.ndarray]) -> np.ndarray:
  """(batch, tokens, tokens) attention rollout (Abnar & Zuidema 2020) over the layers, first to last.

  Each layer's weights are averaged over heads, the identity (the residual path) is added and the rows
  are normalised again; the rollout is the product of these matrices, last layer leftmost. Row i says
  how much of token i's final value comes from each input token: rows are non-negative and sum to 1.
  """
  if not layers:
    raise ValueError("attention rollout needs the weights of at least one layer")
  result = None
  for weights in layers:
    mixed = _check(weights).mean(axis=1)
    mixed = mixed + np.eye(mixed.shape[-1])
    mixed = mixed / mixed.sum(axis=-1, keepdims=True)
    result = mixed if result is None else mixed @ result
  return result.astype(np.float32)


def rollout_maps(rolled: np.ndarray, class_token: bool) -> np.ndarray:
  """(batch, g, g) what the pooled representation draws from each patch, on the patch grid.

  With a class token: its row of the rollout over the patch tokens (non-negative; it sums to 1 minus
  what the class token keeps of its own input embedding). Without (global average pooling): the mean
  of all rows, since the pooled output is the mean of the tokens (sums to 1).
  """
  rolled = np.asarray(rolled, np.float32)
  if class_token:
    row = rolled[:, 0, 1:]
  else:
    row = rolled.mean(axis=1)
  side = grid_side(row.shape[-1])
  return row.reshape(row.shape[0], side, side)


def upsample(maps: np.ndarray, image_size: int) -> np.ndarray:
  """(batch, image_size, image_size) grid maps resized bilinearly onto the image (weights stay
  non-negative: every output pixel is a convex combination of grid cells)."""
  maps = np.asarray(maps, np.float32)
  return np.asarray(jax.image.resize(maps, (maps.shape[0], image_size, image_size), "bilinear"))
