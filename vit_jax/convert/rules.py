"""The vocabulary of the family converters: a Rule maps one of our variables to a torch key with a layout
change; the helpers below build the rules that recur (LayerNorm, Linear, fused q/k/v, attention proj).
Torch is never imported: state dicts arrive as numpy arrays.
"""
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


class Rule(NamedTuple):
  """One variable of ours ('/'-joined path in `collection`), the torch key it comes from, the layout change.

  collection is 'params' for weights, 'batch_stats' for BatchNorm running statistics.
  """
  ours: str
  torch_key: str
  transform: Transform
  collection: str = "params"


def identity(x: np.ndarray) -> np.ndarray:
  return x


def linear_kernel(w: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) -> Dense kernel (in, out)."""
  return w.T


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight OIHW -> Flax Conv kernel HWIO."""
  return w.transpose(2, 3, 1, 0)


def qkv_kernel(part: int, num_heads: int) -> Transform:
  """Fused qkv Linear weight (3*D, D), rows [q; k; v] -> one of them as a (D, heads, head_dim) kernel."""
  return lambda w: w.reshape(3, -1, w.shape[1])[part].T.reshape(w.shape[1], num_heads, -1)


def qkv_bias(part: int, num_heads: int) -> Transform:
  """Fused qkv bias (3*D,) -> one of q/k/v as (heads, head_dim)."""
  return lambda b: b.reshape(3, num_heads, -1)[part]


def out_kernel(num_heads: int) -> Transform:
  """Attention proj Linear weight (D_out, heads*head_dim) -> (heads, head_dim, D_out) kernel."""
  return lambda w: w.T.reshape(num_heads, -1, w.shape[0])


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
