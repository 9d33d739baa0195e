"""Reference (PyTorch) weights into our Flax variables; one module per family lists its name mapping."""
from vit_jax.convert.core import ConversionReport, from_torch, from_torch_variables
from vit_jax.convert.rules import Rule

__all__ = ["ConversionReport", "Rule", "from_torch", "from_torch_variables"]
