"""A named architecture: which module class, with which keyword arguments. Family modules list theirs."""
import dataclasses
from typing import Any, Callable

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Variant:
  """A registry entry: the module class (the family) and the keyword arguments that define the variant."""
  family: Callable[..., nn.Module]
  kwargs: dict[str, Any]
  defaults: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"num_classes": 1000, "image_size": 224})
