"""Specification of the finiteness check that guards every checkpoint save."""
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import parallel
from vit_jax.train.finiteness import nonfinite_paths


def test_a_finite_tree_has_no_nonfinite_paths():
  tree = {"params": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2, jnp.bfloat16)}, "step": jnp.int32(4)}
  assert nonfinite_paths(tree) == []


def test_nan_and_inf_leaves_are_named_by_their_paths():
  tree = {"params": {"w": jnp.ones((3, 2)).at[1, 0].set(jnp.nan),
                     "b": jnp.zeros(2, jnp.bfloat16).at[0].set(jnp.inf)},
          "opt_state": [{"nu": -jnp.ones(4)}], "rng": jnp.zeros(2, jnp.uint32)}
  assert sorted(nonfinite_paths(tree)) == ["params/b", "params/w"]


def test_a_sharded_array_is_checked_where_it_lives():
  mesh = parallel.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  values = np.ones((16, 4), np.float32)
  values[13, 2] = np.nan  # on the seventh of eight devices
  bad = jax.device_put(values, sharding)
  assert nonfinite_paths({"kernel": bad, "fine": jax.device_put(np.ones((16, 4)), sharding)}) == [
      "kernel"]
