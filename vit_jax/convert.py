"""Brings PyTorch (timm) weights into our Flax parameter trees, checked leaf by leaf against the model.

Torch is never imported here: the caller turns the state dict into numpy first, e.g.
`{k: v.float().numpy() for k, v in timm_model.state_dict().items()}`, then calls
`params, report = from_torch('ViT-B/16', state_dict, num_classes=1000, gelu_approximate=False)`.
Each model family has one small function that lists its name mapping (`Rule`s); `_CONVERTERS` picks it.
"""
import dataclasses
import re
from typing import Any, Callable, Mapping, NamedTuple, Optional

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models.registry import create_model
from vit_jax.models.vit import VisionTransformer

Transform = Callable[[np.ndarray], np.ndarray]


class Rule(NamedTuple):
  """One parameter of ours ('/'-joined path), the torch key it comes from, and the layout change."""
  ours: str
  torch_key: str
  transform: Transform


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


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def _linear_kernel(w: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) -> Dense kernel (in, out)."""
  return w.T


def _conv_kernel(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight OIHW -> Flax Conv kernel HWIO."""
  return w.transpose(2, 3, 1, 0)


def _qkv_kernel(part: int, num_heads: int) -> Transform:
  """Fused qkv Linear weight (3*D, D), rows [q; k; v] -> one of them as DenseGeneral kernel (D, H, hd)."""
  return lambda w: w.reshape(3, -1, w.shape[1])[part].T.reshape(w.shape[1], num_heads, -1)


def _qkv_bias(part: int, num_heads: int) -> Transform:
  """Fused qkv bias (3*D,) -> one of q/k/v as (H, hd)."""
  return lambda b: b.reshape(3, num_heads, -1)[part]


def _out_kernel(num_heads: int) -> Transform:
  """Attention proj Linear weight (D_out, H*hd) -> DenseGeneral kernel (H, hd, D_out)."""
  return lambda w: w.T.reshape(num_heads, -1, w.shape[0])


# timm ViT options whose parameters have no counterpart in our model: converting without them would
# silently compute a different function, so they are errors, each with what to do.
_TIMM_VIT_UNSUPPORTED = {
    r"^fc_norm\.": "a LayerNorm after pooling (timm fc_norm, the default with global_pool='avg'); our "
                   "'gap' normalizes every token (encoder_norm) and then averages: build the timm model "
                   "with fc_norm=False",
    r"^norm_pre\.": "a LayerNorm before the blocks (timm pre_norm=True, CLIP style)",
    r"\.ls[12]\.": "LayerScale (timm init_values)",
    r"^reg_token$": "register tokens (timm reg_tokens)",
    r"\.attn\.(q_norm|k_norm|norm)\.": "normalization inside attention (timm qk_norm / scale_attn_norm)",
    r"\.mlp\.(norm|fc1_g|fc1_x)\.": "a gated or normalized MLP (timm SwiGLU / scale_mlp_norm)",
    r"^attn_pool\.": "attention pooling (timm global_pool='map')",
    r"^patch_embed\.norm\.": "a LayerNorm after the patch embedding",
}


def _vit_rules(model: VisionTransformer, keys: set[str]) -> list[Rule]:
  """The timm VisionTransformer <-> vit_jax mapping (ARCHITECTURES.md section 2.4)."""
  for pattern, feature in _TIMM_VIT_UNSUPPORTED.items():
    found = sorted(k for k in keys if re.search(pattern, k))
    if found:
      raise ValueError(f"the state dict holds {found[:4]}: {feature}, which {model.__class__.__name__} "
                       "does not have.")
  heads = model.num_heads
  rules = [Rule("embedding/kernel", "patch_embed.proj.weight", _conv_kernel),
           Rule("embedding/bias", "patch_embed.proj.bias", _identity),
           Rule("cls", "cls_token", _identity),
           Rule("Transformer/posembed_input/pos_embedding", "pos_embed", _identity)]

  def layer_norm(ours, theirs):
    return [Rule(f"{ours}/scale", f"{theirs}.weight", _identity),
            Rule(f"{ours}/bias", f"{theirs}.bias", _identity)]

  def dense(ours, theirs):
    return [Rule(f"{ours}/kernel", f"{theirs}.weight", _linear_kernel),
            Rule(f"{ours}/bias", f"{theirs}.bias", _identity)]

  for i in range(model.num_layers):
    ours, theirs = f"Transformer/encoderblock_{i}", f"blocks.{i}"
    attn = f"{ours}/MultiHeadDotProductAttention_0"
    rules += layer_norm(f"{ours}/LayerNorm_0", f"{theirs}.norm1")
    for part, name in enumerate(("query", "key", "value")):
      rules += [Rule(f"{attn}/{name}/kernel", f"{theirs}.attn.qkv.weight", _qkv_kernel(part, heads)),
                Rule(f"{attn}/{name}/bias", f"{theirs}.attn.qkv.bias", _qkv_bias(part, heads))]
    rules += [Rule(f"{attn}/out/kernel", f"{theirs}.attn.proj.weight", _out_kernel(heads)),
              Rule(f"{attn}/out/bias", f"{theirs}.attn.proj.bias", _identity)]
    rules += layer_norm(f"{ours}/LayerNorm_1", f"{theirs}.norm2")
    rules += dense(f"{ours}/MlpBlock_0/Dense_0", f"{theirs}.mlp.fc1")
    rules += dense(f"{ours}/MlpBlock_0/Dense_1", f"{theirs}.mlp.fc2")
  rules += layer_norm("Transformer/encoder_norm", "norm")
  rules += dense("head", "head")
  return rules  # pre_logits has no timm counterpart: it is reported missing when the model has one.


# Family (the module class in the registry) -> its mapping. Hybrid, BiT, TNT, T2T and LV-ViT go here.
_CONVERTERS: dict[type, Callable[[Any, set[str]], list[Rule]]] = {
    VisionTransformer: _vit_rules,
}

_HINTS = {
    "pos_embedding": "the image size or class-token setting differs (timm no_embed_class=True stores no "
                     "cls slot); resize the grid with vit_jax.checkpoint or pass image_size=...",
    "head/": "the class count differs; pass num_classes=... or drop the head keys and allow_missing=True",
}


def _dummy_input(model: nn.Module) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)


def _expected_leaves(model: nn.Module) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of the model's parameters, from an abstract init (no compute, no memory)."""
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), _dummy_input(model))
  return flax.traverse_util.flatten_dict(nn.unbox(variables)["params"], sep="/")


def _fresh_leaves(model: nn.Module, rng: Optional[jax.Array]) -> dict[str, np.ndarray]:
  rng = jax.random.key(0) if rng is None else rng
  dummy = jnp.zeros(_dummy_input(model).shape, jnp.float32)
  variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rng, dummy)
  params = jax.tree.map(np.asarray, nn.unbox(variables)["params"])
  return flax.traverse_util.flatten_dict(params, sep="/")


def from_torch(name: str, state_dict: Mapping[str, Any], *, allow_missing: bool = False,
               rng: Optional[jax.Array] = None, **overrides: Any) -> tuple[dict, ConversionReport]:
  """Converts a timm state dict (numpy arrays, timm names) into params for create_model(name, **overrides).

  Every leaf is checked against the model's own shapes; mismatches raise one ValueError naming each torch
  key and our path. Parameters whose torch keys are missing raise too, unless allow_missing=True, which
  takes them from a fresh init with `rng` (e.g. a new head, or qkv biases of a qkv_bias=False model).
  Returns (nested dict of numpy float arrays, ConversionReport).
  """
  model = create_model(name, **overrides)
  converter = _CONVERTERS.get(type(model))
  if converter is None:
    raise NotImplementedError(
        f"no torch converter for {name} ({type(model).__name__}); known: "
        f"{', '.join(c.__name__ for c in _CONVERTERS)}")
  expected = _expected_leaves(model)
  rules = [r for r in converter(model, set(state_dict)) if r.ours in expected]
  by_path = {r.ours: r for r in rules}
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
      mismatched.append(f"{rule.torch_key} {tuple(raw.shape)} -> {path}: model expects {spec.shape}"
                        + (f" ({hint})" if hint else ""))
      continue
    leaves[path] = value.astype(spec.dtype)
  problems = [f"shape mismatch: {m}" for m in mismatched]
  if missing and not allow_missing:
    problems += [f"missing: {t} (for {p}); pass allow_missing=True to initialize it fresh"
                 for t, p in missing]
  if problems:
    raise ValueError(f"state dict does not fit {name} with {overrides}:\n  " + "\n  ".join(problems))
  if missing:
    fresh = _fresh_leaves(model, rng)
    leaves.update({p: fresh[p] for _, p in missing})
  report = ConversionReport(
      unused=tuple(sorted(set(state_dict) - read)),
      missing=tuple(dict.fromkeys(t for t, _ in missing)),
      initialized=tuple(p for _, p in missing))
  return flax.traverse_util.unflatten_dict(leaves, sep="/"), report
