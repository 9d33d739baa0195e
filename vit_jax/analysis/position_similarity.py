"""How similar each position embedding is to every other (the ViT paper's Figure 7, centre).

The paper draws, for every patch position of the grid, a map of the cosine similarity between its
position embedding and those of all other patches. The class token's embedding has no place on the
grid and is left out.
"""
import numpy as np


def grid_side(tokens: int, what: str = "patch tokens") -> int:
  """The side g of a square g x g token grid holding `tokens` tokens."""
  side = int(round(np.sqrt(tokens)))
  if side * side != tokens:
    raise ValueError(f"{tokens} {what} do not form a square grid; the analyses need one")
  return side


def cosine_similarity(pos_embedding: np.ndarray, class_token: bool) -> np.ndarray:
  """(g, g, g, g) similarities: [r, c] is the map of position (r, c) over every position (r', c').

  pos_embedding is the (1, tokens, D) or (tokens, D) table, the class token's row first when
  class_token is True (it is dropped). Symmetric, 1 on the diagonal ([r, c, r, c]).
  """
  table = np.asarray(pos_embedding, np.float64)
  table = table[0] if table.ndim == 3 else table
  if table.ndim != 2:
    raise ValueError(f"expected a position embedding of shape (1, tokens, D), got {pos_embedding.shape}")
  table = table[1:] if class_token else table
  side = grid_side(table.shape[0], "position embeddings (class token left out)")
  norms = np.linalg.norm(table, axis=1, keepdims=True)
  if np.any(norms == 0):
    raise ValueError("a position embedding is all zeros: its cosine similarity is undefined")
  unit = table / norms
  similarity = np.clip(unit @ unit.T, -1.0, 1.0)
  return similarity.reshape(side, side, side, side).astype(np.float32)


def most_similar_other(similarity: np.ndarray) -> np.ndarray:
  """(g, g, 2): for every position, the grid position of the most similar other embedding."""
  side = similarity.shape[0]
  flat = np.array(similarity.reshape(side * side, side * side), np.float64)
  np.fill_diagonal(flat, -np.inf)
  best = flat.argmax(axis=1)
  return np.stack([best // side, best % side], axis=-1).reshape(side, side, 2)


def neighbour_fraction(similarity: np.ndarray) -> float:
  """The fraction of positions whose most similar other embedding is one of its (up to 8) grid
  neighbours (Chebyshev distance 1): what 'nearby patches have similar embeddings' predicts."""
  side = similarity.shape[0]
  rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
  best = most_similar_other(similarity)
  distance = np.maximum(np.abs(best[..., 0] - rows), np.abs(best[..., 1] - cols))
  return float(np.mean(distance == 1))


def mean_by_distance(similarity: np.ndarray) -> list[float]:
  """The mean similarity of pairs of positions 1, 2, ..., g-1 grid steps apart (Chebyshev distance),
  in that order: how fast similarity falls off with distance."""
  side = similarity.shape[0]
  rows, cols = np.divmod(np.arange(side * side), side)
  distance = np.maximum(np.abs(rows[:, None] - rows[None, :]), np.abs(cols[:, None] - cols[None, :]))
  flat = np.asarray(similarity, np.float64).reshape(side * side, side * side)
  return [float(flat[distance == d].mean()) for d in range(1, side)]
