"""The input corruption of masked patch prediction (ViT paper, App. B.1.2), on patch embeddings.

BERT's masked-token recipe applied to a ViT's patch embeddings before the class token and position
embeddings are added (docs/architectures.md#masked-patch-prediction): 50% of each image's patches are
corrupted; a corrupted patch becomes the learnable [mask] embedding (80%), the embedding of another
patch (10%) or stays as it is (10%). The model then predicts a target for each corrupted patch from
its output token (vit_jax/train/masked_patch.py). Pure jnp, jittable and shardable over the batch.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

CORRUPT_FRACTION = 0.5  # of each image's patches
MASK_SHARE = 0.8        # of the corrupted ones: replaced by the [mask] embedding
RANDOM_SHARE = 0.1      # replaced by another patch's embedding; the rest (0.1) kept as they are
COLOUR_CLASSES = 512    # what is predicted per patch: its 3-bit mean colour, 8 levels per channel


class Corruption(NamedTuple):
  """Corrupted patch embeddings and, per patch, which of them the loss is taken over."""
  embeddings: jax.Array  # (B, N, D) what the encoder sees
  corrupted: jax.Array   # (B, N) bool: masked, replaced or kept by choice (the prediction targets)


def corrupted_count(tokens: int, fraction: float = CORRUPT_FRACTION) -> int:
  """Patches corrupted per image: fraction of them rounded half up, at least one (every image has a
  target)."""
  return max(1, min(tokens, math.floor(fraction * tokens + 0.5)))


def corrupt_patches(rng: jax.Array, embeddings: jax.Array, mask_embedding: jax.Array, *,
                    fraction: float = CORRUPT_FRACTION, mask_share: float = MASK_SHARE,
                    random_share: float = RANDOM_SHARE) -> Corruption:
  """Corrupts exactly corrupted_count(N) patches of every image, chosen uniformly without
  replacement; each corrupted patch independently becomes mask_embedding (D,) with probability
  mask_share, the original embedding of another patch of the same image (a uniformly chosen other
  position) with probability random_share, and stays unchanged otherwise.

  An exact count per image (rather than a coin per patch) gives every example the same number of
  targets; the replacement comes from the same image so that the draw stays on the example's device.
  """
  batch, tokens, _ = embeddings.shape
  choose_rng, kind_rng, other_rng = jax.random.split(rng, 3)
  # The `count` lowest ranks of uniform noise: a uniform subset of exactly `count` positions.
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(choose_rng, (batch, tokens)), axis=1), axis=1)
  corrupted = ranks < corrupted_count(tokens, fraction)
  kind = jax.random.uniform(kind_rng, (batch, tokens))
  masked = corrupted & (kind < mask_share)
  replaced = corrupted & (kind >= mask_share) & (kind < mask_share + random_share)
  if tokens > 1:
    offset = jax.random.randint(other_rng, (batch, tokens), 1, tokens)  # never the patch itself
    source = (jnp.arange(tokens)[None, :] + offset) % tokens
    others = jnp.take_along_axis(embeddings, source[..., None], axis=1)
  else:
    others = embeddings
  mask_embedding = jnp.asarray(mask_embedding, embeddings.dtype)
  out = jnp.where(replaced[..., None], others, embeddings)
  out = jnp.where(masked[..., None], mask_embedding, out)
  return Corruption(out, corrupted)
