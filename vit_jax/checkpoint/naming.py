"""Parameter-tree naming: flat '/'-joined keys, and the public (pre-Linen) <-> Linen submodule numbering.

The public vit_jax npz files number the submodules of an encoder block globally in creation order
(LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3); Linen numbers them per type
(LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0).
"""
import re
from typing import Any, Mapping

from absl import logging
import numpy as np

_BLOCK = re.compile(r"encoderblock_\d+")
_NUMBERED = re.compile(r"(.+)_(\d+)")

# The ViT encoder block, Linen name -> public (pre-Linen, globally numbered) name.
LINEN_TO_PUBLIC = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}; empty subtrees are dropped (as np.savez would)."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b/c': leaf} -> nested dict; a key that is both a leaf and a prefix is an error."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, name = path.split("/")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"key {path!r} nests under {part!r}, which is also an array in the file")
    if name in node:
      raise ValueError(f"key {path!r} is both an array and a module in the file")
    node[name] = value
  return tree


def _renumber_per_type(block: Mapping[str, Any]) -> dict[str, Any]:
  """Renames `Type_i` children to per-type numbers, ordered by their global index i."""
  numbered = {}
  for name in block:
    match = _NUMBERED.fullmatch(name)
    if match:
      numbered.setdefault(match.group(1), []).append((int(match.group(2)), name))
  rename = {}
  for kind, entries in numbered.items():
    for rank, (_, name) in enumerate(sorted(entries)):
      rename[name] = f"{kind}_{rank}"
  return {rename.get(name, name): value for name, value in block.items()}


def to_linen_names(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Public (pre-Linen) names -> Linen names inside every encoderblock_N; Linen names pass unchanged."""
  out = {}
  for name, value in tree.items():
    if isinstance(value, Mapping):
      value = to_linen_names(value)
      if _BLOCK.fullmatch(name):
        value = _renumber_per_type(value)
    out[name] = value
  return out


def to_public_names(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Linen names -> public (pre-Linen) names in every ViT encoderblock_N (the inverse of to_linen_names).

  A block that is not the ViT layout (other children) keeps its Linen names, which to_linen_names
  also reads back unchanged.
  """
  out = {}
  for name, value in tree.items():
    if isinstance(value, Mapping):
      value = to_public_names(value)
      if _BLOCK.fullmatch(name):
        if set(value) == set(LINEN_TO_PUBLIC):
          value = {LINEN_TO_PUBLIC[child]: sub for child, sub in value.items()}
        else:
          logging.warning("%s has children %s, not the ViT encoder-block layout; keeping Linen names.",
                          name, sorted(value))
    out[name] = value
  return out


def squeeze_groupnorm(flat: Mapping[str, Any]) -> dict[str, Any]:
  """GroupNorm scale/bias stored as (1, 1, 1, C) by old checkpoints -> (C,) (flax>=0.3.6 layout)."""
  out = {}
  for path, value in flat.items():
    parts = path.split("/")
    if (len(parts) >= 2 and parts[-2].startswith("gn") and parts[-1] in ("scale", "bias")
        and np.ndim(value) == 4 and np.shape(value)[:3] == (1, 1, 1)):
      value = np.reshape(value, (-1,))
    out[path] = value
  return out
