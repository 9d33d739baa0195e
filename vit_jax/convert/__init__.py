"""Reference (PyTorch) weights into our Flax variables and back; one module per family lists its name
mapping, which both directions read."""
from vit_jax.convert.core import ConversionReport, from_torch, from_torch_variables
from vit_jax.convert.rules import Rule
from vit_jax.convert.to_torch import to_torch

__all__ = ["ConversionReport", "Rule", "from_torch", "from_torch_variables", "to_torch"]
