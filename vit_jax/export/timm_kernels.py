"""Kernels of the official hybrid's weight standardization, rewritten for timm's.

Our R+ViT hybrids follow the official model: a kernel w is used as c / (sigma + eps), with c = w - mean
and sigma = sqrt(mean(c**2)) per output channel. timm's `StdConv2dSame` computes c / sqrt(sigma**2 +
eps_t) and has no option for the other form (docs/export.md#timm). Writing c * k instead of w, with
k**2 = eps_t / (eps * (2 sigma + eps)), makes timm's form give exactly our standardized kernel:
c k / sqrt(sigma**2 k**2 + eps_t) = c / sqrt(sigma**2 + eps (2 sigma + eps)) = c / (sigma + eps).
So timm's hybrid computes our function (to float32 rounding) with its own layer, at its usual eps_t.
"""
from typing import Mapping

import numpy as np

# timm builds its R+ViT hybrids with StdConv2dSame(eps=1e-8); the rewritten kernels are for that value.
TIMM_HYBRID_EPSILON = 1e-8
# The hybrid's weight-standardized convolutions in timm's state dict: 4-D weights of the ResNet backbone
# (patch_embed.proj, the patch embedding after it, is a plain convolution).
BACKBONE_PREFIX = "patch_embed.backbone."


def for_timm_form(kernel: np.ndarray, epsilon: float, timm_epsilon: float = TIMM_HYBRID_EPSILON
                  ) -> np.ndarray:
  """An OIHW kernel used as c / (sigma + epsilon), rewritten so that c / sqrt(sigma**2 + timm_epsilon)
  of the result is the same standardized kernel. Computed in float64, returned in the kernel's dtype."""
  if epsilon <= 0:
    raise ValueError(f"weight_std_epsilon must be positive for the 'std' form, got {epsilon}")
  w = np.asarray(kernel, np.float64)
  centred = w - w.mean(axis=(1, 2, 3), keepdims=True)
  sigma = np.sqrt(np.square(centred).mean(axis=(1, 2, 3), keepdims=True))
  scale = np.sqrt(timm_epsilon / (epsilon * (2 * sigma + epsilon)))
  return (centred * scale).astype(kernel.dtype)


def rewrite_backbone(state: Mapping[str, np.ndarray], epsilon: float) -> dict[str, np.ndarray]:
  """The timm state dict of a hybrid with the 'std' form, its standardized kernels rewritten."""
  return {key: for_timm_form(value, epsilon)
          if key.startswith(BACKBONE_PREFIX) and value.ndim == 4 else value
          for key, value in state.items()}
