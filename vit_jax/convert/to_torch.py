"""Our Flax variables -> a reference state dict (timm's names and layouts): from_torch run backwards.

Each family's rules (vit_jax/convert/*.py) say which torch key, and which layout change, every variable
of ours comes from; this module reads the same rules the other way, so the export cannot drift from
the import: `from_torch_variables(name, to_torch(name, variables), **overrides)` gives `variables`
back bit for bit. A torch key read by several rules (the fused q/k/v) is assembled from all of them;
each layout is applied to an array of element indices to learn where our values go.
"""
import math
from typing import Any, Mapping

import flax.linen as nn
import flax.traverse_util
import numpy as np

from vit_jax.convert import core
from vit_jax.convert.rules import Rule
from vit_jax.models.registry import create_model


def _flat(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  tree = flax.traverse_util.flatten_dict(nn.unbox(dict(variables)), sep="/")
  return {path: np.asarray(value) for path, value in tree.items()}


def _check_leaves(name: str, ours: Mapping[str, np.ndarray], expected: Mapping[str, Any]) -> None:
  problems = [f"{path} {ours[path].shape}: {name} has {expected[path].shape}"
              for path in ours.keys() & expected.keys() if ours[path].shape != expected[path].shape]
  problems += [f"{path}: not a variable of {name}" for path in sorted(ours.keys() - expected.keys())]
  problems += [f"{path}: missing" for path in sorted(expected.keys() - ours.keys())]
  if problems:
    raise ValueError(f"the variables are not those of {name} ({len(problems)} differ):\n  "
                     + "\n  ".join(sorted(problems)))


def _assemble(torch_key: str, rules: list[Rule], ours: Mapping[str, np.ndarray]) -> np.ndarray:
  """The torch array whose layouts give each rule's variable of ours."""
  shapes = {tuple(rule.transform.torch_shape(ours[rule.ours].shape)) for rule in rules}
  if len(shapes) != 1:
    raise ValueError(f"{torch_key}: the rules reading it imply different shapes {sorted(shapes)}")
  shape = shapes.pop()
  size = math.prod(shape)
  positions = np.arange(size).reshape(shape)
  out = np.zeros(size, ours[rules[0].ours].dtype)
  written = np.zeros(size, bool)
  for rule in rules:
    value, where = ours[rule.ours], np.asarray(rule.transform(positions))
    if where.shape != value.shape:
      raise ValueError(f"{torch_key} {shape} -> {rule.ours} gives {where.shape}, not {value.shape}")
    where, value = where.ravel(), value.ravel()
    clash = written[where] & (out[where] != value)
    if clash.any():
      raise ValueError(f"{torch_key}: {rule.ours} disagrees with another variable on the same elements")
    out[where], written[where] = value, True
  if not written.all():
    raise ValueError(f"{torch_key} {shape}: {int((~written).sum())} elements come from no variable of ours")
  return out.reshape(shape)


def to_torch(name: str, variables: Mapping[str, Any], **overrides: Any) -> dict[str, np.ndarray]:
  """The state dict (numpy arrays, torch layouts) that from_torch_variables converts into `variables`,
  all collections of create_model(name, **overrides) ({'params': ..., 'batch_stats': ...}, unrolled
  layers). A variable the reference model has no place for (ViT's pre_logits in timm) is an error."""
  model = create_model(name, **overrides)
  converter = core.CONVERTERS.get(type(model))
  if converter is None:
    raise NotImplementedError(f"no torch names for {name} ({type(model).__name__})")
  ours, expected = _flat(variables), core.expected_leaves(model)
  _check_leaves(name, ours, expected)
  rules = [r._replace(ours=f"{r.collection}/{r.ours}") for r in converter(model, {})]
  by_key: dict[str, list[Rule]] = {}
  for rule in rules:
    if rule.ours in ours:
      by_key.setdefault(rule.torch_key, []).append(rule)
  unmapped = sorted(ours.keys() - {rule.ours for group in by_key.values() for rule in group})
  if unmapped:
    raise ValueError(f"{name} has variables the reference model has no place for: "
                     f"{', '.join(p.removeprefix('params/') for p in unmapped)}")
  return {key: _assemble(key, group, ours) for key, group in sorted(by_key.items())}
