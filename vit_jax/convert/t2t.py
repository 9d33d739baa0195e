"""The official T2T-ViT (yitu-opensource/T2T-ViT models/t2t_vit.py) state dict -> our T2TViT variables.

Released checkpoints were built with qk_scale = embed_dim^-0.5: convert and create them with
attention_scale='embed_dim'. The Performer matrices `tokens_to_token.attention{1,2}.w` go to the
'constants' collection (use from_torch_variables); `pos_embed` is the fixed sinusoid table, which our
model recomputes, so it is reported as unused.
"""
from typing import Mapping

import numpy as np

from vit_jax.convert.rules import (Rule, dense_rules, identity, layer_norm_rules, out_kernel,
                                   qkv_kernel)
from vit_jax.models.t2t import CONSTANTS, T2TViT


def _t2t_layer_rules(model: T2TViT, index: int) -> list[Rule]:
  ours, theirs = f"tokens_to_token/attention{index}", f"tokens_to_token.attention{index}"
  rules = layer_norm_rules(f"{ours}/norm1", f"{theirs}.norm1") + layer_norm_rules(
      f"{ours}/norm2", f"{theirs}.norm2")
  if model.tokens_type == "performer":  # kqv rows are [k; q; v], with bias; MLP is a Sequential.
    return rules + [
        *dense_rules(f"{ours}/kqv", f"{theirs}.kqv"), *dense_rules(f"{ours}/proj", f"{theirs}.proj"),
        *dense_rules(f"{ours}/mlp/Dense_0", f"{theirs}.mlp.0"),
        *dense_rules(f"{ours}/mlp/Dense_1", f"{theirs}.mlp.2"),
        Rule(f"{ours}/w", f"{theirs}.w", identity, collection=CONSTANTS)]
  return rules + [  # transformer: qkv rows are [q; k; v], no bias.
      *dense_rules(f"{ours}/qkv", f"{theirs}.attn.qkv", bias=False),
      *dense_rules(f"{ours}/proj", f"{theirs}.attn.proj"),
      *dense_rules(f"{ours}/mlp/Dense_0", f"{theirs}.mlp.fc1"),
      *dense_rules(f"{ours}/mlp/Dense_1", f"{theirs}.mlp.fc2")]


def t2t_rules(model: T2TViT, state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
  """Official T2T-ViT names -> ours (docs/architectures.md#reference-names lists the official keys)."""
  performer_keys = any(k.endswith(".kqv.weight") for k in state_dict if k.startswith("tokens_to_token."))
  transformer_keys = any(k.endswith(".attn.qkv.weight") for k in state_dict
                         if k.startswith("tokens_to_token."))
  if (model.tokens_type == "performer" and transformer_keys) or (
      model.tokens_type == "transformer" and performer_keys):
    other = "transformer" if transformer_keys else "performer"
    raise ValueError(
        f"the state dict has a {other} T2T module but the model is tokens_type="
        f"{model.tokens_type!r}; use a T2T-ViT{'_t' if other == 'transformer' else ''}-* name "
        f"or pass tokens_type={other!r}")
  heads = model.num_heads
  rules = [*_t2t_layer_rules(model, 1), *_t2t_layer_rules(model, 2),
           *dense_rules("tokens_to_token/project", "tokens_to_token.project"),
           Rule("cls", "cls_token", identity)]
  for i in range(model.num_layers):
    ours, theirs = f"Transformer/encoderblock_{i}", f"blocks.{i}"
    attn = f"{ours}/MultiHeadDotProductAttention_0"
    rules += layer_norm_rules(f"{ours}/LayerNorm_0", f"{theirs}.norm1")
    rules += [Rule(f"{attn}/{name}/kernel", f"{theirs}.attn.qkv.weight", qkv_kernel(part, heads))
              for part, name in enumerate(("query", "key", "value"))]
    rules += [Rule(f"{attn}/out/kernel", f"{theirs}.attn.proj.weight", out_kernel(heads)),
              Rule(f"{attn}/out/bias", f"{theirs}.attn.proj.bias", identity)]
    rules += layer_norm_rules(f"{ours}/LayerNorm_1", f"{theirs}.norm2")
    rules += dense_rules(f"{ours}/MlpBlock_0/Dense_0", f"{theirs}.mlp.fc1")
    rules += dense_rules(f"{ours}/MlpBlock_0/Dense_1", f"{theirs}.mlp.fc2")
  rules += layer_norm_rules("Transformer/encoder_norm", "norm")
  rules += dense_rules("head", "head")
  return rules

