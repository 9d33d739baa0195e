"""The one training-state pytree: step, params, optimizer state and rng, saved and sharded as a whole."""
from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes. `rng` is raw uint32 key data, so Orbax stores it as-is."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
