"""The one training-state pytree: step, params, optimizer state and rng, saved and sharded as a whole."""
from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes. `rng` is raw uint32 key data, so Orbax stores it as-is.

  `model_state` holds the model's non-parameter collections (e.g. {'batch_stats': ...} for BatchNorm);
  it is an empty dict for models without any.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  model_state: Any = flax.struct.field(default_factory=dict)
