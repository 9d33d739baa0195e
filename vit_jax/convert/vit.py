"""The timm VisionTransformer -> vit_jax ViT mapping (docs/architectures.md#vit-timm-mapping)."""
import re
from typing import Mapping

import numpy as np

from vit_jax.convert.rules import (Rule, conv_kernel, dense_rules, encoder_blocks_rules, identity,
                                   layer_norm_rules)
from vit_jax.models.vit import VisionTransformer


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


def vit_rules(model: VisionTransformer, state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
  """The timm VisionTransformer <-> vit_jax mapping (docs/architectures.md#vit-timm-mapping)."""
  for pattern, feature in _TIMM_VIT_UNSUPPORTED.items():
    found = sorted(k for k in state_dict if re.search(pattern, k))
    if found:
      raise ValueError(f"the state dict holds {found[:4]}: {feature}, which {model.__class__.__name__} "
                       "does not have.")
  rules = [Rule("embedding/kernel", "patch_embed.proj.weight", conv_kernel),
           Rule("embedding/bias", "patch_embed.proj.bias", identity),
           Rule("cls", "cls_token", identity),
           Rule("Transformer/posembed_input/pos_embedding", "pos_embed", identity)]

  rules += encoder_blocks_rules(model, qkv_biases=True)
  rules += layer_norm_rules("Transformer/encoder_norm", "norm")
  rules += dense_rules("head", "head")
  return rules  # pre_logits has no timm counterpart: it is reported missing when the model has one.

