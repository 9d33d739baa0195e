"""Per-parameter optimizer rules, chosen by regex over '/'-joined parameter paths.

Learning-rate and weight-decay multipliers, frozen parameters and BEiT/timm layer-wise learning-rate
decay: what fine-tuning recipes (linear probe, head-only, layer decay) say in parameter names. Kept
apart from the optax chain (optim.py), which only asks these rules for a value per parameter leaf.
"""
import dataclasses
import re
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

# BEiT/timm layer ids: 0 for what comes before the first block (patch/stem embeddings, class token,
# position embeddings, masked patch prediction's [mask] embedding; a hybrid's ResNet stages; T2T's
# tokens-to-token; TNT's pixel and patch embeddings),
# i+1 for block i, num_layers+1 for everything after (final norm, pre-logits, heads).
_EMBEDDING = re.compile(
    r"(^|/)(embedding|cls|mask_embedding|posembed_input|pos_embedding|patch_embedding|pixel_embedding|"
    r"patch_pos_embedding|pixel_pos_embedding|tokens_to_token|stem|conv_root|gn_root|root_block|"
    r"block\d+)(/|$)")
_BLOCK = re.compile(r"(^|/)(encoderblock|block)_(\d+)(/|$)")       # unrolled: one module per block
_SCANNED_BLOCK = re.compile(r"(^|/)(encoderblock|block)(/|$)")    # scanned: a leading layers axis

Rule = tuple[re.Pattern, float]


def path_name(path) -> str:
  """A key path as the rules see it, e.g. 'Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel'."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def map_with_names(fn, tree: Any) -> Any:
  """fn(name, leaf) over the leaves of a params-shaped tree."""
  return jax.tree_util.tree_map_with_path(lambda path, leaf: fn(path_name(path), leaf), tree)


def names_of(tree: Any) -> Any:
  """The tree with each leaf replaced by its path name."""
  return map_with_names(lambda name, _: name, tree)


def decay_mask(params: Any) -> Any:
  """True for weight matrices (kernels); biases, norm scales, cls and position embeddings are not
  decayed."""
  return map_with_names(
      lambda name, leaf: name.rsplit("/", 1)[-1] == "kernel" and getattr(leaf, "ndim", 0) > 1, params)


def compile_regex(key: str, pattern: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f"optim.{key}: bad regex {pattern!r}: {e}") from e


def parse_multipliers(key: str, entries) -> tuple[Rule, ...]:
  """optim.lr_mults / optim.wd_mults: 'regex=multiplier' strings, e.g. ('head/.*=10', '.*/bias=0')."""
  rules = []
  for entry in entries:
    pattern, sep, value = str(entry).rpartition("=")
    try:
      multiplier = float(value) if sep else None
    except ValueError:
      multiplier = None
    if multiplier is None:
      raise ValueError(f"optim.{key} entry {entry!r} must be 'regex=multiplier', e.g. 'head/.*=10'")
    rules.append((compile_regex(key, pattern), multiplier))
  return tuple(rules)


def first_match(rules: tuple[Rule, ...], name: str) -> float:
  return next((value for regex, value in rules if regex.fullmatch(name)), 1.0)


def layer_decay_multipliers(params: Any, decay: float) -> Any:
  """decay**(num_layers + 1 - layer_id) per leaf (see _EMBEDDING for the ids); a scanned block's leaves
  get an array of one multiplier per layer along their leading axis."""
  names = jax.tree.leaves(names_of(params))
  if not names:  # optax's params placeholder (tree_map_params) has no leaves
    return params
  blocks = [int(m.group(3)) for m in map(_BLOCK.search, names) if m]
  scanned = [leaf.shape[0] for name, leaf in zip(names, jax.tree.leaves(params))
             if _SCANNED_BLOCK.search(name)]
  if not blocks and not scanned:
    raise ValueError("optim.layer_decay needs transformer blocks named encoderblock_{i}, block_{i} or "
                     f"a scanned encoderblock or block; the parameters have none (e.g. {names[:4]})")
  num_layers = max(blocks) + 1 if blocks else scanned[0]

  def multiplier(name, leaf):
    if block := _BLOCK.search(name):
      return decay ** (num_layers - int(block.group(3)))
    if _SCANNED_BLOCK.search(name):
      rows = decay ** (num_layers - np.arange(num_layers, dtype=np.float64))
      return rows.astype(np.float32).reshape((num_layers,) + (1,) * (leaf.ndim - 1))
    return decay ** (num_layers + 1) if _EMBEDDING.search(name) else 1.0
  return map_with_names(multiplier, params)


@dataclasses.dataclass(frozen=True)
class ParamRules:
  """The per-parameter keys of config.optim, parsed (a bad regex fails here, naming its key)."""
  lr_mults: tuple[Rule, ...] = ()
  wd_mults: tuple[Rule, ...] = ()
  freeze: Optional[re.Pattern] = None
  layer_decay: float = 0.0

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "ParamRules":
    if not 0 <= cfg.layer_decay <= 1:
      raise ValueError(f"optim.layer_decay must be in [0, 1] (0 = off), got {cfg.layer_decay}")
    return cls(lr_mults=parse_multipliers("lr_mults", cfg.lr_mults),
               wd_mults=parse_multipliers("wd_mults", cfg.wd_mults),
               freeze=compile_regex("freeze", cfg.freeze) if cfg.freeze else None,
               layer_decay=float(cfg.layer_decay))

  @property
  def scales_lr(self) -> bool:
    return bool(self.lr_mults or self.layer_decay)

  def frozen(self, tree: Any) -> Any:
    """True for the leaves optim.freeze matches: they get no update and no optimizer state."""
    return map_with_names(lambda name, _: bool(self.freeze and self.freeze.fullmatch(name)), tree)

  def lr_multipliers(self, tree: Any) -> Any:
    """Layer decay times the first matching lr_mults rule: a float, or an array for a scanned leaf;
    1.0 for frozen leaves (their update is zero anyway)."""
    layers = (layer_decay_multipliers(tree, self.layer_decay) if self.layer_decay
              else jax.tree.map(lambda _: 1.0, tree))
    return jax.tree.map(lambda name, layer, frozen: 1.0 if frozen else layer * first_match(
        self.lr_mults, name), names_of(tree), layers, self.frozen(tree))

  def decay_rates(self, tree: Any, weight_decay: float) -> Any:
    """weight_decay times the first matching wd_mults rule on decay_mask leaves, else 0.0."""
    return jax.tree.map(
        lambda name, decayed: weight_decay * first_match(self.wd_mults, name) if decayed else 0.0,
        names_of(tree), decay_mask(tree))

  def check(self, params: Any) -> None:
    """Every rule must match some parameter (a mistyped regex is an error, not a silent no-op), and
    layer decay must find the blocks."""
    if self.layer_decay:
      layer_decay_multipliers(params, self.layer_decay)
    names = jax.tree.leaves(names_of(params))
    rules = [("lr_mults", regex) for regex, _ in self.lr_mults]
    rules += [("wd_mults", regex) for regex, _ in self.wd_mults]
    rules += [("freeze", self.freeze)] if self.freeze else []
    for key, regex in rules:
      if not any(regex.fullmatch(name) for name in names):
        raise ValueError(f"optim.{key} regex {regex.pattern!r} matches no parameter (it must match a "
                         f"whole path); paths look like {names[:3]}")
