"""Model families and the registry; `create_model(name, **overrides)` is the entry point."""
from vit_jax.models.registry import VARIANTS, create_model, list_models

__all__ = ["VARIANTS", "create_model", "list_models"]
