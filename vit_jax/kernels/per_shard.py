"""Runs an attention kernel once per shard of the batch and heads axes under the active mesh.

Why: XLA cannot partition a custom call (an FFI target, a Pallas kernel), so under FSDP or tensor
parallelism it would gather the operands onto every device; attention is independent per example and
head, so each device runs the kernel on its own slice instead.
"""
from typing import Callable

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec

from vit_jax import parallel


def per_shard(kernel: Callable[..., jax.Array], q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """kernel(q, k, v) over token-major (batch, tokens, heads, head_dim) operands, per shard of the batch
  and heads axes (their logical names' mesh axes); tokens and head_dim stay whole, and so does an axis
  the mesh does not divide (a batch of 1 at init). Without a mesh of more than one device: one call."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return kernel(q, k, v)
  batch_axes, _, head_axes, _ = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
  spec = parallel.fit_spec(PartitionSpec(batch_axes, None, head_axes, None), q.shape, mesh)
  # check_vma=False: a custom call's results carry no record of the mesh axes they vary over.
  return jax.shard_map(kernel, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
