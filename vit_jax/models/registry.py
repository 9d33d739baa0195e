"""create_model(name, **overrides) over the variant table that the family modules declare.

Each family module (vit.py, resnet.py, tnt.py, ...) lists its named variants next to its architecture in a
`VARIANTS` dict; this module merges them once, so a name is defined in exactly one place. It lives inside
the package so that an installed vit_jax works without the repository's configs/.
"""
import dataclasses
import importlib
import pkgutil
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_jax import models as models_package
from vit_jax.models.variant import Variant


def _collect_variants() -> dict[str, Variant]:
  """Merges the VARIANTS table of every family module in vit_jax.models (vit.py, resnet.py, tnt.py, ...)."""
  variants: dict[str, Variant] = {}
  for info in sorted(pkgutil.iter_modules(models_package.__path__), key=lambda m: m.name):
    module = importlib.import_module(f"{models_package.__name__}.{info.name}")
    for name, variant in getattr(module, "VARIANTS", {}).items():
      if name in variants:
        raise ValueError(f"model name {name!r} is registered twice (again in {module.__name__})")
      variants[name] = variant
  return variants


VARIANTS: dict[str, Variant] = _collect_variants()
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
