"""create_model(name, **overrides) over the variant tables that the family modules declare.

Each family module (vit.py, hybrid.py, resnet.py, tnt.py, t2t.py, lvvit.py) lists its named variants
next to its architecture in a `VARIANTS` dict; FAMILY_MODULES below names those modules, and this module
merges their tables once, so a name is defined in exactly one place. A new family is one module and one
entry here (and in vit_jax/model_fields.py, which reads the same modules' source without jax). It lives
inside the package so that an installed vit_jax works without the repository's configs/.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models import hybrid, lvvit, resnet, t2t, tnt, vit
from vit_jax.models.variant import Variant

# The family modules, each with its VARIANTS table.
FAMILY_MODULES = (vit, hybrid, resnet, tnt, t2t, lvvit)


def _merge_variants() -> dict[str, Variant]:
  variants: dict[str, Variant] = {}
  for module in FAMILY_MODULES:
    for name, variant in module.VARIANTS.items():
      if name in variants:
        raise ValueError(f"model name {name!r} is registered twice (again in {module.__name__})")
      variants[name] = variant
  return variants


VARIANTS: dict[str, Variant] = _merge_variants()
# The family classes, in FAMILY_MODULES order (the hybrid is a VisionTransformer subclass).
FAMILIES: tuple[type[nn.Module], ...] = tuple(dict.fromkeys(v.family for v in VARIANTS.values()))
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
  kwargs = {**variant.defaults, **variant.kwargs, **overrides}
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
