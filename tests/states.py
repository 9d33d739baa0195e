"""Stand-in train states for tests that need a saved run without training (or compiling) one."""
import jax
import numpy as np


def random_state(abstract_state, seed=0, scale=0.02):
  """A state of abstract_state's shapes, dtypes and shardings: normal floats of std `scale`, zero
  integers."""
  rng = np.random.default_rng(seed)

  def fill(leaf):
    if np.issubdtype(leaf.dtype, np.floating):
      value = rng.normal(0.0, scale, leaf.shape).astype(leaf.dtype)
    else:
      value = np.zeros(leaf.shape, leaf.dtype)
    return jax.device_put(value, leaf.sharding)
  return jax.tree.map(fill, abstract_state)
