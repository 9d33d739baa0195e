"""Brings PyTorch (timm) weights into our Flax parameter trees, checked leaf by leaf against the model.

Torch is never imported here: the caller turns the state dict into numpy first, e.g.
`{k: v.float().numpy() for k, v in timm_model.state_dict().items()}`, then calls
`params, report = from_torch('ViT-B/16', state_dict, num_classes=1000, gelu_approximate=False)`.
Each model family has one small function that lists its name mapping (`Rule`s, vit_jax/convert/rules.py)
in its own module; the CONVERTERS table below names them.
"""
import dataclasses
import functools
from typing import Any, Mapping, Optional

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.convert import lvvit, resnet, t2t, tnt, vit
from vit_jax.convert.rules import RulesFn
from vit_jax.models.hybrid import HybridVisionTransformer
from vit_jax.models.lvvit import LVViT
from vit_jax.models.registry import create_model
from vit_jax.models.resnet import ResNetV2
from vit_jax.models.t2t import T2TViT
from vit_jax.models.tnt import TransformerInTransformer
from vit_jax.models.vit import VisionTransformer


@dataclasses.dataclass(frozen=True)
class ConversionReport:
  """What the conversion did not map one-to-one; empty tuples mean an exact match of the two trees."""
  unused: tuple[str, ...]       # torch keys present in the state dict but not read
  missing: tuple[str, ...]      # torch keys the model needed that the state dict lacks
  initialized: tuple[str, ...]  # our parameter paths filled from a fresh init (allow_missing=True)

  def __str__(self) -> str:
    def line(title, items):
      return f"{title} ({len(items)}): {', '.join(items) if items else '-'}"
    return "\n".join([line("unused torch keys", self.unused), line("missing torch keys", self.missing),
                      line("initialized fresh", self.initialized)])


# Which rules function converts which model family, one explicit entry per family.
CONVERTERS: dict[type, RulesFn] = {
    VisionTransformer: vit.vit_rules,
    HybridVisionTransformer: resnet.hybrid_rules,
    ResNetV2: resnet.bit_rules,
    TransformerInTransformer: tnt.tnt_rules,
    T2TViT: t2t.t2t_rules,
    LVViT: lvvit.lvvit_rules,
}

_HINTS = {
    "pos_embedding": "the image size or class-token setting differs (timm no_embed_class=True stores no "
                     "cls slot); resize the grid with vit_jax.checkpoint or pass image_size=...",
    "head/": "the class count differs; pass num_classes=... or drop the head keys and allow_missing=True",
}


def _shown(path: str) -> str:
  """Paths in messages: parameters without the 'params/' prefix, other collections with theirs."""
  return path[len("params/"):] if path.startswith("params/") else path


def _dummy_input(model: nn.Module) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)


def expected_leaves(model: nn.Module) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of every variable ('collection/path'), from an abstract init (no memory used).
  A fresh dict each call; the trace is done once per model (import, export and checks all ask)."""
  try:
    hash(model)
  except TypeError:  # a field given as a list: trace without the cache
    return dict(_traced_leaves.__wrapped__(model))
  return dict(_traced_leaves(model))


@functools.lru_cache(maxsize=64)
def _traced_leaves(model: nn.Module) -> dict[str, jax.ShapeDtypeStruct]:
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), _dummy_input(model))
  return flax.traverse_util.flatten_dict(nn.unbox(dict(variables)), sep="/")


def _fresh_leaves(model: nn.Module, rng: Optional[jax.Array]) -> dict[str, np.ndarray]:
  rng = jax.random.key(0) if rng is None else rng
  dummy = jnp.zeros(_dummy_input(model).shape, jnp.float32)
  variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rng, dummy)
  return flax.traverse_util.flatten_dict(
      jax.tree.map(np.asarray, nn.unbox(dict(variables))), sep="/")


def from_torch(name: str, state_dict: Mapping[str, Any], *, allow_missing: bool = False,
               rng: Optional[jax.Array] = None, **overrides: Any) -> tuple[dict, ConversionReport]:
  """Converts a reference state dict into params for create_model(name, **overrides).

  For models that also keep state (BatchNorm statistics), use from_torch_variables.
  """
  variables, report = from_torch_variables(
      name, state_dict, allow_missing=allow_missing, rng=rng, **overrides)
  extra = sorted(set(variables) - {"params"})
  if extra:
    raise ValueError(f"{name} also has the variable collections {extra} (e.g. BatchNorm statistics); "
                     "use vit_jax.convert.from_torch_variables, which returns all of them")
  return variables["params"], report


def from_torch_variables(name: str, state_dict: Mapping[str, Any], *, allow_missing: bool = False,
                         rng: Optional[jax.Array] = None, **overrides: Any
                         ) -> tuple[dict, ConversionReport]:
  """Converts a reference state dict (numpy arrays; timm names, or the official repository's names for
  T2T-ViT and LV-ViT) into all variables {'params': ..., 'batch_stats': ...} of create_model(name, **overrides).

  Every leaf is checked against the model's own shapes; mismatches raise one ValueError naming each torch
  key and our path. Parameters whose torch keys are missing raise too, unless allow_missing=True, which
  takes them from a fresh init with `rng` (e.g. a new head, or qkv biases of a qkv_bias=False model).
  Returns (nested dict of numpy float arrays, ConversionReport).
  """
  model = create_model(name, **overrides)
  converter = CONVERTERS.get(type(model))
  if converter is None:
    raise NotImplementedError(
        f"no torch converter for {name} ({type(model).__name__}); known: "
        f"{', '.join(c.__name__ for c in CONVERTERS)}")
  expected = expected_leaves(model)
  rules = [r._replace(ours=f"{r.collection}/{r.ours}") for r in converter(model, state_dict)]
  by_path = {r.ours: r for r in rules if r.ours in expected}
  read, missing, mismatched, leaves = set(), [], [], {}
  for path, spec in expected.items():
    rule = by_path.get(path)
    if rule is None or rule.torch_key not in state_dict:
      missing.append((rule.torch_key if rule else "<no timm counterpart>", path))
      continue
    read.add(rule.torch_key)
    raw = np.asarray(state_dict[rule.torch_key])
    try:
      value = rule.transform(raw)
    except (ValueError, IndexError):
      value = None
    if value is None or value.shape != spec.shape:
      hint = next((h for k, h in _HINTS.items() if k in path), "")
      mismatched.append(f"{rule.torch_key} {tuple(raw.shape)} -> {_shown(path)}: model expects {spec.shape}"
                        + (f" ({hint})" if hint else ""))
      continue
    leaves[path] = value.astype(spec.dtype)
  problems = [f"shape mismatch: {m}" for m in mismatched]
  if missing and not allow_missing:
    problems += [f"missing: {t} (for {_shown(p)}); pass allow_missing=True to initialize it fresh"
                 for t, p in missing]
  if problems:
    raise ValueError(f"state dict does not fit {name} with {overrides}:\n  " + "\n  ".join(problems))
  if missing:
    fresh = _fresh_leaves(model, rng)
    leaves.update({p: fresh[p] for _, p in missing})
  report = ConversionReport(
      unused=tuple(sorted(set(state_dict) - read)),
      missing=tuple(dict.fromkeys(t for t, _ in missing)),
      initialized=tuple(_shown(p) for _, p in missing))
  return flax.traverse_util.unflatten_dict(leaves, sep="/"), report
