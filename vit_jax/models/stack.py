"""The one block stack of every transformer family: unrolled or scanned over layers, with a remat policy.

`layer_stack` runs num_layers copies of a block module whose call is
`block(carry, deterministic, drop_path_rate)`: EncoderBlock (ViT, hybrid, T2T-ViT, LV-ViT) carries the
tokens, TNT's TntBlock carries (words, patch tokens). Unrolled blocks are named `{name}_{i}` (the public
checkpoint layout: `encoderblock_{i}`, TNT `block_{i}`). Scanned blocks share one module `{name}` whose
parameters carry a leading `layers` axis; compile time then stays flat in depth. vit_jax.checkpoint
converts between the two layouts on load and export.

`Encoder` is the encoder of ViT, T2T-ViT and LV-ViT: position embeddings, dropout, EncoderBlocks, final
LayerNorm, named as in the public checkpoints (posembed_input, encoderblock_{i}, encoder_norm).
"""
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.layers import (BlockOptions, EncoderBlock, PositionEmbedding, layer_norm,
                                   sinusoid_table)

# What the backward pass keeps from the forward pass, by name.
REMAT_POLICIES: dict[str, Optional[Callable[..., Any]]] = {
    "none": None,                                         # no rematerialisation: keep everything
    "full": jax.checkpoint_policies.nothing_saveable,     # recompute the whole block
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
    "save_named": jax.checkpoint_policies.save_only_these_names("attention_out", "mlp_out"),
}
POSITION_EMBEDDINGS = ("learned", "sinusoid")


@functools.cache
def _scan_step(block: type[nn.Module]) -> type[nn.Module]:
  """`block` as one step of nn.scan: its drop-path rate comes from the layer index it is given.

  A subclass rather than a wrapper module, so the scanned parameters sit directly under `{name}`.
  """

  class ScanStep(block):
    num_layers: int = 1
    stochastic_depth: float = 0.0

    def __call__(  # pytype: disable=signature-mismatch
        self, carry: Any, layer_index: jax.Array, deterministic: bool) -> tuple[Any, None]:
      rate = 0.0  # static: no rng needed when stochastic depth is off
      if self.stochastic_depth:
        rate = self.stochastic_depth * layer_index.astype(jnp.float32) / max(self.num_layers - 1, 1)
      return super().__call__(carry, deterministic, rate), None

  ScanStep.__name__ = ScanStep.__qualname__ = f"Scanned{block.__name__}"
  return ScanStep


def _policy(name: str):
  if name not in REMAT_POLICIES:
    raise ValueError(f"unknown remat_policy {name!r}; choose one of {sorted(REMAT_POLICIES)}")
  return REMAT_POLICIES[name]


def layer_stack(block: type[nn.Module], carry: Any, deterministic: bool, *, name: str,
                num_layers: int, stochastic_depth: float, scan_layers: bool, remat_policy: str,
                **block_fields: Any) -> Any:
  """Runs num_layers `block(**block_fields)` modules on `carry` (call inside a compact __call__: the
  blocks join that module).

  Stochastic depth grows linearly with depth (0 for the first block), as in DeiT/timm, AugReg and the
  official TNT, T2T-ViT and LV-ViT code.
  """
  policy = _policy(remat_policy)
  if scan_layers:
    step = _scan_step(block)
    if remat_policy != "none":
      step = nn.remat(step, policy=policy, prevent_cse=False, static_argnums=(3,))
    scanned = nn.scan(
        step, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast), length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})
    carry, _ = scanned(num_layers=num_layers, stochastic_depth=stochastic_depth, name=name,
                       **block_fields)(carry, jnp.arange(num_layers), deterministic)
    return carry
  if remat_policy != "none":
    block = nn.remat(block, policy=policy, prevent_cse=False, static_argnums=(2,))
  for i in range(num_layers):
    rate = stochastic_depth * i / max(num_layers - 1, 1)
    carry = block(drop_path_rate=rate, name=f"{name}_{i}", **block_fields)(carry, deterministic)
  return carry


def encoder_blocks(x: jax.Array, deterministic: bool, options: BlockOptions, *, num_layers: int,
                   stochastic_depth: float, scan_layers: bool, remat_policy: str) -> jax.Array:
  """num_layers EncoderBlocks with `options`, named encoderblock_{i} (scanned: encoderblock)."""
  return layer_stack(EncoderBlock, x, deterministic, name="encoderblock", num_layers=num_layers,
                     stochastic_depth=stochastic_depth, scan_layers=scan_layers,
                     remat_policy=remat_policy, options=options)


class Encoder(nn.Module):
  """Position embeddings, dropout, EncoderBlocks, final LayerNorm.

  position_embedding: 'learned' (the table posembed_input/pos_embedding, resized in 2D on fine-tuning)
  or 'sinusoid' (T2T-ViT's fixed table, recomputed from the token count: no variable).
  """
  options: BlockOptions
  num_layers: int
  stochastic_depth: float = 0.0
  scan_layers: bool = False
  remat_policy: str = "none"
  position_embedding: str = "learned"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if self.position_embedding == "learned":
      x = PositionEmbedding(name="posembed_input")(x)
    elif self.position_embedding == "sinusoid":
      x = x + jnp.asarray(sinusoid_table(x.shape[1], x.shape[2]), x.dtype)
    else:
      raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, "
                       f"got {self.position_embedding!r}")
    x = nn.Dropout(self.options.dropout_rate)(x, deterministic=deterministic)
    x = encoder_blocks(x, deterministic, self.options, num_layers=self.num_layers,
                       stochastic_depth=self.stochastic_depth, scan_layers=self.scan_layers,
                       remat_policy=self.remat_policy)
    return layer_norm(self.options.layer_norm_epsilon, self.options.dtype, "encoder_norm")(x)
