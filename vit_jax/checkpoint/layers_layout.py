"""Scanned <-> unrolled layer layouts: `encoderblock` with a leading layers axis <-> `encoderblock_{i}`.

Models built with scan_layers=True keep one stacked block; checkpoints in the public format (and
models without scan) keep one block per layer. Loading and export convert, so either side reads the
other's files. The stacks are named as in models/stack.py: `encoderblock` (ViT, hybrid, T2T-ViT,
LV-ViT) and TNT's `block`.
"""
import re
from typing import Any, Mapping

import numpy as np

STACKS = ("encoderblock", "block")
_UNROLLED = re.compile(r"(encoderblock|block)_(\d+)")


def unstack_layers(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Every scanned stack (e.g. `encoderblock`, leading layers axis) becomes encoderblock_0 ... _{n-1}."""
  out: dict[str, Any] = {}
  for key, value in tree.items():
    if key in STACKS and isinstance(value, Mapping):
      leaves = _leaves(value)
      depth = {np.shape(leaf)[0] for leaf in leaves}
      if len(depth) != 1:
        raise ValueError(f"scanned {key} leaves disagree on the number of layers: {sorted(depth)}")
      for i in range(depth.pop()):
        out[f"{key}_{i}"] = _map(value, lambda leaf, i=i: np.asarray(leaf)[i])
    elif isinstance(value, Mapping):
      out[key] = unstack_layers(value)
    else:
      out[key] = value
  return out


def stack_layers(tree: Mapping[str, Any]) -> dict[str, Any]:
  """encoderblock_0 ... _{n-1} siblings become one `encoderblock` stacked along a new leading axis."""
  out: dict[str, Any] = {}
  for stack in STACKS:
    blocks = sorted((int(m.group(2)), key) for key in tree
                    if (m := _UNROLLED.fullmatch(key)) and m.group(1) == stack)
    if blocks:
      if [i for i, _ in blocks] != list(range(len(blocks))):
        raise ValueError(f"{stack} blocks are not numbered 0..{len(blocks) - 1}: {[k for _, k in blocks]}")
      out[stack] = _stack([tree[key] for _, key in blocks])
  for key, value in tree.items():
    if _UNROLLED.fullmatch(key):
      continue
    out[key] = stack_layers(value) if isinstance(value, Mapping) else value
  return out


def is_scanned(tree: Mapping[str, Any]) -> bool:
  """Whether a params tree holds a scanned stack (`encoderblock`, TNT's `block`) anywhere."""
  return any(key in STACKS or (isinstance(value, Mapping) and is_scanned(value))
             for key, value in tree.items())


def like(tree: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
  """`tree` in the layout (scanned or unrolled) of `reference`."""
  unrolled = unstack_layers(tree)
  return stack_layers(unrolled) if is_scanned(reference) else unrolled


def _leaves(tree: Mapping[str, Any]) -> list[Any]:
  return [leaf for value in tree.values()
          for leaf in (_leaves(value) if isinstance(value, Mapping) else [value])]


def _map(tree: Mapping[str, Any], fn) -> dict[str, Any]:
  return {k: _map(v, fn) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


def _stack(trees: list[Mapping[str, Any]]) -> dict[str, Any]:
  first = trees[0]
  return {k: _stack([t[k] for t in trees]) if isinstance(v, Mapping)
          else np.stack([np.asarray(t[k]) for t in trees]) for k, v in first.items()}
