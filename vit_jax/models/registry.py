"""The model variant table, written once, and create_model(name, **overrides).

It lives inside the package so that an installed vit_jax works without the repository's configs/.
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models.vit import VisionTransformer


@dataclasses.dataclass(frozen=True)
class Variant:
  """A named architecture: the module class and the keyword arguments that define it."""
  family: Callable[..., nn.Module]
  kwargs: dict[str, Any]


def _vit(hidden_size, mlp_dim, num_heads, num_layers, patch_size, **extra):
  return Variant(VisionTransformer, dict(
      hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, num_layers=num_layers,
      patch_size=patch_size, **extra))


# Dimensions from the ViT paper (Table 1) and the public vit_jax configs (Ti and S from DeiT/AugReg).
VARIANTS: dict[str, Variant] = {
    "ViT-Ti/16": _vit(192, 768, 3, 12, 16),
    "ViT-S/16": _vit(384, 1536, 6, 12, 16),
    "ViT-S/32": _vit(384, 1536, 6, 12, 32),
    "ViT-B/8": _vit(768, 3072, 12, 12, 8),
    "ViT-B/16": _vit(768, 3072, 12, 12, 16),
    "ViT-B/32": _vit(768, 3072, 12, 12, 32),
    "ViT-L/16": _vit(1024, 4096, 16, 24, 16),
    "ViT-L/32": _vit(1024, 4096, 16, 24, 32),
    "ViT-H/14": _vit(1280, 5120, 16, 32, 14),
    # Small variants for tests and the embedded default job.
    "ViT-testing": _vit(10, 10, 2, 1, 16),
    "ViT-micro/4": _vit(32, 64, 2, 2, 4, image_size=16),
    "ViT-tiny/4": _vit(64, 128, 4, 4, 4, image_size=16),
}

_DEFAULTS = dict(num_classes=1000, image_size=224)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def list_models() -> list[str]:
  return sorted(VARIANTS)


def create_model(name: str, **overrides: Any) -> nn.Module:
  """Builds the named model; overrides replace any architecture or training field of the module.

  Example: create_model('ViT-B/16', num_classes=10, image_size=384, gelu_approximate=False).
  """
  if name not in VARIANTS:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
  variant = VARIANTS[name]
  kwargs = {**_DEFAULTS, **variant.kwargs, **overrides}
  fields = {f.name for f in dataclasses.fields(variant.family)} - {"parent", "name"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(
        f"unknown override(s) {unknown} for {name}; valid fields: {', '.join(sorted(fields))}")
  if isinstance(kwargs.get("dtype"), str):
    if kwargs["dtype"] not in _DTYPES:
      raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {kwargs['dtype']!r}")
    kwargs["dtype"] = _DTYPES[kwargs["dtype"]]
  return variant.family(**kwargs)
