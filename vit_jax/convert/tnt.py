"""The timm TNT (`tnt_s_patch16_224`, `tnt_b_patch16_224`) -> vit_jax TNT mapping.

timm names, layouts and the official ones are in docs/architectures.md#tnt-op-order and
#tnt-official-names.
"""
import math
import re
from typing import Mapping

import numpy as np

from vit_jax.convert.rules import (Layout, Rule, Shape, conv_kernel, dense_rules, identity,
                                   layer_norm_rules, out_kernel, qkv_kernel)
from vit_jax.models.tnt import TransformerInTransformer


def _pixel_pos_torch_shape(shape: Shape) -> Shape:
  side = math.isqrt(shape[1])
  if side * side != shape[1]:
    raise ValueError(f"pixel_pos_embedding {shape}: {shape[1]} words do not form a square grid")
  return (shape[0], shape[2], side, side)


# timm pixel_pos (1, c, rows, cols), added before the words are flattened -> ours (1, words, c).
_pixel_pos = Layout(lambda w: w.reshape(w.shape[0], w.shape[1], -1).transpose(0, 2, 1),
                    _pixel_pos_torch_shape)


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
            + [Rule(f"{mha}/query/kernel", f"{attn}.qk.weight", qkv_kernel(0, heads, parts=2)),
               Rule(f"{mha}/key/kernel", f"{attn}.qk.weight", qkv_kernel(1, heads, parts=2)),
               Rule(f"{mha}/value/kernel", f"{attn}.v.weight", qkv_kernel(0, heads, parts=1)),
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

