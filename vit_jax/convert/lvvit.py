"""The official LV-ViT state dict (zihangJiang/TokenLabeling tlt/models/lvvit.py) -> vit_jax LVViT variables.

BatchNorm running statistics go to the 'batch_stats' collection: convert with
`vit_jax.convert.from_torch_variables('LV-ViT-S', state_dict)`. The `num_batches_tracked` counters have no
use here and are reported unused.
"""
import re
from typing import Mapping

import numpy as np

from vit_jax.convert.rules import (Rule, conv_kernel, dense_rules, encoder_blocks_rules, identity,
                                   layer_norm_rules)
from vit_jax.models.lvvit import LVViT


# Official LV-ViT options that compute a different function from our LVViT: errors, not silent drops.
_UNSUPPORTED = {
    r"\.attn\.qkv\.bias$": "q/k/v biases (official qkv_bias=True); LV-ViT has none",
    r"^patch_embed\.backbone\.": "a hybrid CNN backbone (official hybrid_backbone)",
    r"\.mlp\.fc[12]\.group_weight$": "grouped MLPs (official GroupLinear)",
}


def lvvit_rules(model: LVViT, state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
  """Official LV-ViT names (patch_embed.*, blocks.i.*, norm, head, aux_head) -> ours."""
  for pattern, feature in _UNSUPPORTED.items():
    found = sorted(k for k in state_dict if re.search(pattern, k))
    if found:
      raise ValueError(f"the state dict holds {found[:4]}: {feature}, which LVViT does not have.")
  if "head.weight" in state_dict and "aux_head.weight" not in state_dict:
    raise ValueError(
        "the state dict has a head but no aux_head: it comes from an LV-ViT built without "
        "return_dense (official 'lvvit'/'vit'), whose output is the class head alone, while LVViT adds "
        "0.5 x the max token logit; convert an lvvit_t/s/m/l checkpoint, or drop head.* as well and "
        "pass allow_missing=True to start both heads fresh")
  rules = []
  for i in (1, 2, 3):
    stem, theirs = f"stem/bn{i}", f"patch_embed.bn{i}"
    rules += [Rule(f"stem/conv{i}/kernel", f"patch_embed.conv{i}.weight", conv_kernel),
              Rule(f"{stem}/scale", f"{theirs}.weight", identity),
              Rule(f"{stem}/bias", f"{theirs}.bias", identity),
              Rule(f"{stem}/mean", f"{theirs}.running_mean", identity, collection="batch_stats"),
              Rule(f"{stem}/var", f"{theirs}.running_var", identity, collection="batch_stats")]
  rules += [Rule("stem/proj/kernel", "patch_embed.proj.weight", conv_kernel),
            Rule("stem/proj/bias", "patch_embed.proj.bias", identity),
            Rule("cls", "cls_token", identity),
            Rule("Transformer/posembed_input/pos_embedding", "pos_embed", identity)]

  rules += encoder_blocks_rules(model, qkv_biases=False)
  rules += layer_norm_rules("Transformer/encoder_norm", "norm")
  rules += dense_rules("head", "head")
  rules += dense_rules("aux_head", "aux_head")
  return rules

