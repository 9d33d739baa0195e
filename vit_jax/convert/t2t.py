"""The official T2T-ViT (yitu-opensource/T2T-ViT models/t2t_vit.py) state dict -> our T2TViT variables.

Released checkpoints were built with qk_scale = embed_dim^-0.5: convert and create them with
attention_scale='embed_dim'. The Performer matrices `tokens_to_token.attention{1,2}.w` go to the
'constants' collection (use from_torch_variables); `pos_embed` is the fixed sinusoid table, which our
model recomputes: it is checked against ours (a checkpoint with another table is an error) and
reported as unused.
"""
from typing import Mapping

import numpy as np

from vit_jax.convert.rules import (Rule, dense_rules, encoder_blocks_rules, identity,
                                   layer_norm_rules)
from vit_jax.models.t2t import CONSTANTS, T2TViT, sinusoid_table

SINUSOID_TOLERANCE = 1e-6  # both tables are float64 computations rounded to float32


def check_sinusoid_table(state_dict: Mapping[str, np.ndarray]) -> None:
  """Raises unless the state dict's `pos_embed` is the sinusoid table T2TViT computes for as many
  positions (any count: a new resolution recomputes it). Our model never loads the table, so a
  checkpoint whose table differs (learned, or another formula) would convert to a different function."""
  if "pos_embed" not in state_dict:
    return
  theirs = np.asarray(state_dict["pos_embed"], np.float32)
  if theirs.ndim != 3 or theirs.shape[0] != 1:
    raise ValueError(f"pos_embed has shape {theirs.shape}; T2T-ViT's fixed sinusoid table is "
                     "(1, positions, hidden_size)")
  difference = float(np.max(np.abs(theirs - sinusoid_table(theirs.shape[1], theirs.shape[2])),
                            initial=0.0))
  if difference > SINUSOID_TOLERANCE:
    raise ValueError(
        f"pos_embed {theirs.shape} is not the fixed sinusoid table T2TViT computes (max difference "
        f"{difference:.3g} > {SINUSOID_TOLERANCE:g}): this checkpoint was built with other position "
        "embeddings (learned or another formula), which T2TViT does not load; convert it to a "
        "model that has them instead")


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
  check_sinusoid_table(state_dict)
  rules = [*_t2t_layer_rules(model, 1), *_t2t_layer_rules(model, 2),
           *dense_rules("tokens_to_token/project", "tokens_to_token.project"),
           Rule("cls", "cls_token", identity)]
  rules += encoder_blocks_rules(model, qkv_biases=False)
  rules += layer_norm_rules("Transformer/encoder_norm", "norm")
  rules += dense_rules("head", "head")
  return rules

