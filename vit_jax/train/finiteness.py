"""Whether a train state holds only finite numbers, checked on device before it is checkpointed.

A checkpoint must never hold NaN or Inf: keep-K rotation would then delete the last good step, and a
rerun would resume from the broken one. The check is one jitted reduction per floating-point leaf
(sharded arrays reduce where they live; only one bool per leaf reaches the host), so it is cheap
beside the save it guards. Every process of a job must call it at the same step (it is a collective).
"""
from typing import Any

import jax
import jax.numpy as jnp

from vit_jax.train.param_rules import path_name


def _leaf_is_finite(leaf: jax.Array) -> jax.Array:
  if jnp.issubdtype(leaf.dtype, jnp.inexact):
    return jnp.all(jnp.isfinite(leaf))
  return jnp.ones((), jnp.bool_)  # integers (step, rng bits) are always finite


@jax.jit
def _finite_flags(tree: Any) -> Any:
  return jax.tree.map(_leaf_is_finite, tree)


def nonfinite_paths(tree: Any) -> list[str]:
  """'/'-joined paths of the leaves of `tree` that hold a NaN or an Inf (empty: all finite)."""
  flags = jax.device_get(_finite_flags(tree))
  return [path_name(path) for path, finite in jax.tree_util.tree_leaves_with_path(flags)
          if not finite]
