"""The vocabulary of the family converters: a Rule maps one of our variables to a torch key with a layout
change; the helpers below build the rules that recur (LayerNorm, Linear, fused q/k/v, attention proj).
Each layout change also states the torch shape it reads, so that the same rules run backwards
(vit_jax/convert/to_torch.py) and an export can never drift from the import.
Torch is never imported: state dicts arrive as numpy arrays.
"""
import math
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

Shape = tuple[int, ...]


class Layout(NamedTuple):
  """A torch -> ours layout change (called like a function) and, for export, the torch shape that
  gives one of our shapes. Layouts only move, split and reshape values, never compute new ones."""
  forward: Callable[[np.ndarray], np.ndarray]
  torch_shape: Callable[[Shape], Shape]

  def __call__(self, w: np.ndarray) -> np.ndarray:
    return self.forward(w)



class Rule(NamedTuple):
  """One variable of ours ('/'-joined path in `collection`), the torch key it comes from, the layout change.

  collection is 'params' for weights, 'batch_stats' for BatchNorm running statistics.
  """
  ours: str
  torch_key: str
  transform: Layout
  collection: str = "params"


identity = Layout(lambda x: x, lambda shape: shape)

# torch Linear weight (out, in) -> Dense kernel (in, out).
linear_kernel = Layout(lambda w: w.T, lambda shape: shape[::-1])

# torch Conv2d weight OIHW -> Flax Conv kernel HWIO.
conv_kernel = Layout(lambda w: w.transpose(2, 3, 1, 0),
                     lambda shape: (shape[3], shape[2], shape[0], shape[1]))


def qkv_kernel(part: int, num_heads: int, parts: int = 3) -> Layout:
  """Fused Linear weight (parts*D, D), rows [q; k; v] (or TNT's [q; k], or v alone with parts=1)
  -> one of them as a (D, heads, head_dim) kernel."""
  return Layout(
      lambda w: w.reshape(parts, -1, w.shape[1])[part].T.reshape(w.shape[1], num_heads, -1),
      lambda shape: (parts * shape[1] * shape[2], shape[0]))


def qkv_bias(part: int, num_heads: int) -> Layout:
  """Fused qkv bias (3*D,) -> one of q/k/v as (heads, head_dim)."""
  return Layout(lambda b: b.reshape(3, num_heads, -1)[part],
                lambda shape: (3 * math.prod(shape),))


def out_kernel(num_heads: int) -> Layout:
  """Attention proj Linear weight (D_out, heads*head_dim) -> (heads, head_dim, D_out) kernel."""
  return Layout(lambda w: w.T.reshape(num_heads, -1, w.shape[0]),
                lambda shape: (shape[2], shape[0] * shape[1]))


def layer_norm_rules(ours: str, theirs: str) -> list[Rule]:
  """A torch LayerNorm (weight, bias) -> our (scale, bias)."""
  return [Rule(f"{ours}/scale", f"{theirs}.weight", identity),
          Rule(f"{ours}/bias", f"{theirs}.bias", identity)]


def dense_rules(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
  """A torch Linear -> our Dense (kernel transposed)."""
  rules = [Rule(f"{ours}/kernel", f"{theirs}.weight", linear_kernel)]
  return rules + [Rule(f"{ours}/bias", f"{theirs}.bias", identity)] if bias else rules


def encoder_blocks_rules(model: Any, qkv_biases: bool) -> list[Rule]:
  """The timm-style pre-norm blocks `blocks.{i}` (norm1, fused attn.qkv, attn.proj, norm2, mlp.fc1/fc2)
  -> our EncoderBlocks Transformer/encoderblock_{i} (ViT, the hybrid, T2T-ViT, LV-ViT)."""
  heads, rules = model.num_heads, []
  for i in range(model.num_layers):
    ours, theirs = f"Transformer/encoderblock_{i}", f"blocks.{i}"
    attn = f"{ours}/MultiHeadDotProductAttention_0"
    rules += layer_norm_rules(f"{ours}/LayerNorm_0", f"{theirs}.norm1")
    for part, name in enumerate(("query", "key", "value")):
      rules.append(Rule(f"{attn}/{name}/kernel", f"{theirs}.attn.qkv.weight", qkv_kernel(part, heads)))
      if qkv_biases:
        rules.append(Rule(f"{attn}/{name}/bias", f"{theirs}.attn.qkv.bias", qkv_bias(part, heads)))
    rules += [Rule(f"{attn}/out/kernel", f"{theirs}.attn.proj.weight", out_kernel(heads)),
              Rule(f"{attn}/out/bias", f"{theirs}.attn.proj.bias", identity)]
    rules += layer_norm_rules(f"{ours}/LayerNorm_1", f"{theirs}.norm2")
    rules += dense_rules(f"{ours}/MlpBlock_0/Dense_0", f"{theirs}.mlp.fc1")
    rules += dense_rules(f"{ours}/MlpBlock_0/Dense_1", f"{theirs}.mlp.fc2")
  return rules


# A family's rules function: (model, state dict) -> the rules of every variable of the model. It
# raises on state dicts it cannot convert (options of the reference model that ours lacks).
RulesFn = Callable[[Any, Mapping[str, np.ndarray]], list[Rule]]
