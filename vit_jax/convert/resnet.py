"""timm ResNetV2 names -> ours: BiT (`resnetv2_50x1_bit` ...), R+ViT hybrids (`vit_base_r50_s16_224` ...).

docs/architectures.md#hybrid-timm-mapping (hybrid) and #bit-timm-mapping (BiT). timm's numerics
differ from the official models in two epsilons; convert with them for an exact match:
  BiT:    from_torch('BiT-R50x1', sd, weight_std_epsilon=1e-8)
  hybrid: from_torch('R50+ViT-B/16', sd, group_norm_epsilon=1e-5, weight_std_epsilon=1e-8,
                     weight_std_form='sqrt_var', gelu_approximate=False)
"""
import re
from typing import Iterable, Mapping

import numpy as np

from vit_jax.convert.rules import Layout, Rule, conv_kernel, identity
from vit_jax.convert.vit import vit_rules
from vit_jax.models.hybrid import HybridVisionTransformer
from vit_jax.models.resnet import ResNetV2

# timm ResNetV2 options whose computation our BiT does not have; converting would silently differ.
_TIMM_BIT_UNSUPPORTED = {
    r"^stem\.conv\d\.": "a deep 3x3 stem (timm stem_type='deep'/'tiered', the resnetv2_*d models)",
    r"^stem\.norm\.|\.downsample\.norm\.": "post-activation blocks (timm preact=False); BiT is "
                                           "pre-activation (the hybrids' stem is R+ViT in hybrid.py)",
    r"\.downsample\.pool\.": "average-pool downsampling (timm avg_down=True)",
}


def _check_supported(keys: Iterable[str], table: dict[str, str], model_name: str) -> None:
  for pattern, feature in table.items():
    found = sorted(k for k in keys if re.search(pattern, k))
    if found:
      raise ValueError(f"the state dict holds {found[:4]}: {feature}, which {model_name} does not have.")


# timm's 1x1 conv classifier (classes, C, 1, 1) -> Dense kernel (C, classes).
_head_conv_kernel = Layout(lambda w: w.reshape(w.shape[0], w.shape[1]).T,
                           lambda shape: (shape[1], shape[0], 1, 1))


def _norm(ours: str, theirs: str) -> list[Rule]:
  return [Rule(f"{ours}/scale", f"{theirs}.weight", identity),
          Rule(f"{ours}/bias", f"{theirs}.bias", identity)]


def _conv(ours: str, theirs: str) -> list[Rule]:
  return [Rule(f"{ours}/kernel", f"{theirs}.weight", conv_kernel)]


def _bottleneck_rules(ours: str, theirs: str, *, projection_norm: bool) -> list[Rule]:
  """One bottleneck unit: conv/gn 1-3 and the shortcut's conv (and norm, in the hybrid's ResNet)."""
  rules = []
  for r in (1, 2, 3):
    rules += _conv(f"{ours}/conv{r}", f"{theirs}.conv{r}") + _norm(f"{ours}/gn{r}", f"{theirs}.norm{r}")
  rules += _conv(f"{ours}/conv_proj", f"{theirs}.downsample.conv")
  return rules + (_norm(f"{ours}/gn_proj", f"{theirs}.downsample.norm") if projection_norm else [])


def bit_rules(model: ResNetV2, state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
  """timm `ResNetV2(preact=True, stem_type='fixed')` -> our BiT (official bit_jax / big_vision names)."""
  _check_supported(state_dict, _TIMM_BIT_UNSUPPORTED, type(model).__name__)
  rules = _conv("root_block/conv_root", "stem.conv")
  for i, num_units in enumerate(model.resnet_layers):
    for j in range(num_units):
      rules += _bottleneck_rules(f"block{i + 1}/unit{j + 1:02d}", f"stages.{i}.blocks.{j}",
                                 projection_norm=False)
  rules += _norm("norm-pre-head", "norm")
  rules += [Rule("head/kernel", "head.fc.weight", _head_conv_kernel),
            Rule("head/bias", "head.fc.bias", identity)]
  return rules


def hybrid_rules(model: HybridVisionTransformer, state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
  """timm VisionTransformer with a HybridEmbed(ResNetV2(preact=False, stem_type='same')) -> ours.

  With stages the backbone's root sits under `stem.`; a root-only backbone (R+ViT-Ti/16, timm
  `vit_tiny_r_s16_p8_*`) is the bare stem.
  """
  backbone = "patch_embed.backbone."
  root = backbone + ("stem." if model.resnet_layers else "")
  rules = _conv("conv_root", root + "conv") + _norm("gn_root", root + "norm")
  for i, num_units in enumerate(model.resnet_layers):
    for j in range(num_units):
      rules += _bottleneck_rules(f"block{i + 1}/unit{j + 1}", f"{backbone}stages.{i}.blocks.{j}",
                                 projection_norm=True)
  # The transformer half, and `embedding` <- patch_embed.proj (the 1x1 or PxP conv on the feature map).
  return rules + vit_rules(model, state_dict)

