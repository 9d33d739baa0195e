"""big_vision's ViT checkpoints read as ours (docs/checkpoint_format.md#big-vision).

Their encoder blocks, attention, MLP, norms, `cls`, `head` and `pre_logits` already carry our (Linen)
names, and a scanned file (`Transformer/encoderblock` with a leading layer axis) is unrolled by
layers_layout like one of ours. Two things differ:
- the position table sits at the top level (`pos_embedding`) and is added to the patches before the
  class token is prepended, so the class token gets no position; ours adds one table to
  [cls, patches], so the same function has a zero class-token row;
- with posemb='sincos2d' the file holds no table at all: a fixed 2D sin-cos table of the grid is
  added instead. `sincos_table` computes it for the grid of the model that loads the file.
Attention-pooling heads (pool_type='map', a `MAPHead_0` module) have no counterpart and are refused.
"""
from typing import Any, Mapping

import numpy as np

POSEMB = "pos_embedding"
OUR_POSEMB = ("Transformer", "posembed_input", POSEMB)
MAP_HEAD = "MAPHead_0"
# The top-level modules of a big_vision ViT classifier (ours hold the same, plus posembed_input).
_VIT_TOP = {"embedding", "cls", POSEMB, "Transformer", "pre_logits", "head", MAP_HEAD}


def is_big_vision(tree: Mapping[str, Any]) -> bool:
  """A ViT parameter tree in big_vision's layout: its position table at the top level, or none."""
  if not set(tree) <= _VIT_TOP or "embedding" not in tree or "Transformer" not in tree:
    return False
  return POSEMB in tree or "posembed_input" not in tree["Transformer"]


def uses_sincos_table(tree: Mapping[str, Any]) -> bool:
  """A big_vision ViT with posemb='sincos2d': no position table in the file."""
  return is_big_vision(tree) and POSEMB not in tree


def to_our_layout(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
  """The tree with the table moved under Transformer/posembed_input, a zero class-token row added
  when the model has a class token and the table does not have that row yet."""
  if MAP_HEAD in tree:
    raise ValueError(f"{source} is a big_vision ViT with an attention-pooling head (pool_type='map', "
                     f"{MAP_HEAD}), which our ViT does not have (classifier 'token' or 'gap')")
  out = {key: value for key, value in tree.items() if key != POSEMB}
  if POSEMB in tree:
    table = np.asarray(tree[POSEMB])
    rows = table.shape[1]
    if "cls" in tree and int(np.sqrt(rows)) ** 2 == rows:
      table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
    out["Transformer"] = {**tree["Transformer"], "posembed_input": {POSEMB: table}}
  return out


def sincos_table(grid: int, width: int, class_token: bool, dtype: Any = np.float32) -> np.ndarray:
  """(1, [1 +] grid * grid, width): big_vision's fixed table for a square grid, rows in row-major
  (y, x) order: [sin(x w), cos(x w), sin(y w), cos(y w)] with w = 10000 ** -(k / (width/4 - 1)),
  k < width / 4; a zero first row for the class token."""
  if width % 4:
    raise ValueError(f"a 2D sin-cos position table needs a width divisible by 4, got {width}")
  quarter = width // 4
  omega = 1.0 / 10_000.0 ** (np.arange(quarter) / max(quarter - 1, 1))
  y, x = np.divmod(np.arange(grid * grid), grid)
  x_angles, y_angles = np.outer(x, omega), np.outer(y, omega)
  table = np.concatenate([np.sin(x_angles), np.cos(x_angles), np.sin(y_angles), np.cos(y_angles)],
                         axis=1)
  if class_token:
    table = np.concatenate([np.zeros((1, width)), table])
  return table[None].astype(dtype)
