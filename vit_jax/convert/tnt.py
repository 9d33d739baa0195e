"""The timm TNT (`tnt_s_patch16_224`, `tnt_b_patch16_224`) -> vit_jax TNT mapping.

timm names, layouts and the official ones are in docs/architectures.md#tnt-op-order and
#tnt-official-names.
"""
import re
from typing import Mapping

import numpy as np

from vit_jax.convert.rules import (Rule, Transform, conv_kernel, dense_rules, identity,
                                   layer_norm_rules, out_kernel)
from vit_jax.models.tnt import TransformerInTransformer


def _qk_kernel(part: int, num_heads: int) -> Transform:
  """Fused qk Linear weight (2*D, D), rows [q; k] -> one of them as a (D, heads, head_dim) kernel."""
  return lambda w: w.reshape(2, -1, w.shape[1])[part].T.reshape(w.shape[1], num_heads, -1)


def _v_kernel(num_heads: int) -> Transform:
  """v Linear weight (D, D) -> (D, heads, head_dim) kernel."""
  return lambda w: w.T.reshape(w.shape[1], num_heads, -1)


def _pixel_pos(w: np.ndarray) -> np.ndarray:
  """timm pixel_pos (1, c, rows, cols), added before the words are flattened -> ours (1, words, c)."""
  return w.reshape(w.shape[0], w.shape[1], -1).transpose(0, 2, 1)


# State dicts that are some other TNT: converting them would compute a different function.
_UNSUPPORTED = {
    r"^outer_pos$": "the official repository's names (outer_pos, inner_pos, patch_embed, ...); rename "
                    "them to timm's (docs/architectures.md#tnt-official-names, timm checkpoint_filter_fn)",
    r"^blocks\.\d+\.proj\.bias$": "the legacy TNT (timm tnt_s_legacy_patch16_224: convolution over the "
                                  "whole image, per-word LayerNorm in the projection)",
    r"\.attn_(in|out)\.(qk|v)\.bias$": "q/k/v biases (timm qkv_bias=True); TNT has none",
}


def tnt_rules(model: TransformerInTransformer, state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
  """Our TNT parameter paths and the timm keys (with layout changes) they come from."""
  for pattern, feature in _UNSUPPORTED.items():
    found = sorted(k for k in state_dict if re.search(pattern, k))
    if found:
      raise ValueError(f"the state dict holds {found[:4]}: {feature}, which "
                       f"{model.__class__.__name__} does not support.")

  layer_norm, dense = layer_norm_rules, dense_rules

  def pixels_to_patch(ours, theirs_prefix, bias):
    return (layer_norm(f"{ours}/pixels_norm", f"{theirs_prefix}norm1_proj")
            + dense(f"{ours}/dense", f"{theirs_prefix}proj", bias)
            + layer_norm(f"{ours}/patch_norm", f"{theirs_prefix}norm2_proj"))

  def encoder(ours, attn, norm1, norm2, mlp, heads):
    mha = f"{ours}/MultiHeadDotProductAttention_0"
    return (layer_norm(f"{ours}/LayerNorm_0", norm1)
            + [Rule(f"{mha}/query/kernel", f"{attn}.qk.weight", _qk_kernel(0, heads)),
               Rule(f"{mha}/key/kernel", f"{attn}.qk.weight", _qk_kernel(1, heads)),
               Rule(f"{mha}/value/kernel", f"{attn}.v.weight", _v_kernel(heads)),
               Rule(f"{mha}/out/kernel", f"{attn}.proj.weight", out_kernel(heads)),
               Rule(f"{mha}/out/bias", f"{attn}.proj.bias", identity)]
            + layer_norm(f"{ours}/LayerNorm_1", norm2)
            + dense(f"{ours}/MlpBlock_0/Dense_0", f"{mlp}.fc1")
            + dense(f"{ours}/MlpBlock_0/Dense_1", f"{mlp}.fc2"))

  rules = [Rule("pixel_embedding/kernel", "pixel_embed.proj.weight", conv_kernel),
           Rule("pixel_embedding/bias", "pixel_embed.proj.bias", identity),
           Rule("pixel_pos_embedding", "pixel_pos", _pixel_pos),
           Rule("cls", "cls_token", identity),
           Rule("patch_pos_embedding", "patch_pos", identity)]
  rules += pixels_to_patch("patch_embedding", "", bias=True)
  for i in range(model.num_layers):
    ours, theirs = f"block_{i}", f"blocks.{i}"
    rules += encoder(f"{ours}/inner_encoder", f"{theirs}.attn_in", f"{theirs}.norm_in",
                     f"{theirs}.norm_mlp_in", f"{theirs}.mlp_in", model.inner_num_heads)
    rules += pixels_to_patch(f"{ours}/pixels_to_patch", f"{theirs}.", bias=False)
    rules += encoder(f"{ours}/outer_encoder", f"{theirs}.attn_out", f"{theirs}.norm_out",
                     f"{theirs}.norm_mlp", f"{theirs}.mlp", model.outer_num_heads)
  rules += layer_norm("encoder_norm", "norm")
  rules += dense("head", "head")
  return rules

