"""How a stack of identical encoder blocks runs: unrolled or scanned over layers, with a remat policy.

Unrolled blocks are named `encoderblock_{i}` (the public checkpoint layout). Scanned blocks share one
module `encoderblock` whose parameters carry a leading `layers` axis; compile time then stays flat in
depth. vit_jax.checkpoint converts between the two layouts on load and export.
"""
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.layers import EncoderBlock

# What the backward pass keeps from the forward pass, by name.
REMAT_POLICIES: dict[str, Optional[Callable[..., Any]]] = {
    "none": None,                                         # no rematerialisation: keep everything
    "full": jax.checkpoint_policies.nothing_saveable,     # recompute the whole block
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
    "save_named": jax.checkpoint_policies.save_only_these_names("attention_out", "mlp_out"),
}


class _ScannedBlock(EncoderBlock):
  """One step of nn.scan: an EncoderBlock whose drop-path rate comes from the layer index."""
  num_layers: int = 1
  stochastic_depth: float = 0.0

  def __call__(self, x: jax.Array, layer_index: jax.Array, deterministic: bool):  # pytype: disable=signature-mismatch
    rate = 0.0  # static: no rng needed when stochastic depth is off
    if self.stochastic_depth:
      rate = self.stochastic_depth * layer_index.astype(jnp.float32) / max(self.num_layers - 1, 1)
    return super().__call__(x, deterministic, rate), None


def _policy(name: str):
  if name not in REMAT_POLICIES:
    raise ValueError(f"unknown remat_policy {name!r}; choose one of {sorted(REMAT_POLICIES)}")
  return REMAT_POLICIES[name]


def encoder_blocks(x: jax.Array, deterministic: bool, *, num_layers: int, stochastic_depth: float,
                   scan_layers: bool, remat_policy: str, **block_kwargs: Any) -> jax.Array:
  """Runs num_layers EncoderBlocks (call inside a compact __call__: the blocks join that module).

  Stochastic depth grows linearly with depth (0 for the first block), as in DeiT/timm and AugReg.
  """
  policy = _policy(remat_policy)
  if scan_layers:
    block = _ScannedBlock
    if remat_policy != "none":
      block = nn.remat(block, policy=policy, prevent_cse=False, static_argnums=(3,))
    scanned = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast), length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = scanned(num_layers=num_layers, stochastic_depth=stochastic_depth, name="encoderblock",
                   **block_kwargs)(x, jnp.arange(num_layers), deterministic)
    return x
  block = EncoderBlock
  if remat_policy != "none":
    block = nn.remat(block, policy=policy, prevent_cse=False, static_argnums=(2,))
  for i in range(num_layers):
    rate = stochastic_depth * i / max(num_layers - 1, 1)
    x = block(drop_path_rate=rate, name=f"encoderblock_{i}", **block_kwargs)(x, deterministic)
  return x
