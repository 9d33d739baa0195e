"""A trained classifier's class scores at every location: what a token-labeling teacher stores.

A CNN (BiT) applies its classifier to the final feature map before pooling; a transformer applies
its head to each patch token of the encoder output (after its final norm and the representation
layer, if any), or its per-token head where it has one (LV-ViT, ViT with token_head). Because a
linear head commutes with mean pooling, the mean of a global-average-pooled model's map is its
logits. Everything here is jnp and jittable.
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.interface import INTERMEDIATES


def dense_logits(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  """(B, H', W', classes) float32 logits on the model's own grid (token grid or feature map)."""
  _, state = model.apply(variables, images, train=False, mutable=[INTERMEDIATES])
  (encoded,) = state[INTERMEDIATES]["encoded"]
  interface = model.interface
  params = variables["params"]
  if encoded.ndim == 4:  # a CNN's feature map (B, h, w, channels)
    features = encoded
  else:
    tokens = encoded[:, 1:] if interface.class_token else encoded
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
      raise ValueError(f"{tokens.shape[1]} patch tokens do not form a square grid")
    features = tokens.reshape(tokens.shape[0], side, side, tokens.shape[2])
  features = features.astype(jnp.float32)
  if interface.representation_layer:
    pre = params["pre_logits"]
    features = jnp.tanh(features @ pre["kernel"] + pre["bias"])
  head = params["aux_head"] if "aux_head" in params else params["head"]
  return features @ jnp.asarray(head["kernel"], jnp.float32) + head["bias"]


def top_k_maps(logits: jax.Array, k: int, grid: Optional[tuple[int, int]] = None
               ) -> tuple[jax.Array, jax.Array]:
  """(B, H', W', C) logits -> their k largest per location and the class ids, both (B, k, H, W),
  the layout of stored score maps; `grid` (H, W) resizes the logits bilinearly first."""
  if grid is not None and tuple(grid) != logits.shape[1:3]:
    logits = jax.image.resize(logits, (logits.shape[0], *grid, logits.shape[3]), "bilinear")
  values, indices = jax.lax.top_k(logits, k)
  return jnp.moveaxis(values, 3, 1), jnp.moveaxis(indices, 3, 1).astype(jnp.int32)
