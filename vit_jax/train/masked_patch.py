"""Masked patch prediction (ViT paper, Sec. 4.6 and App. B.1.2): self-supervised pretraining targets,
loss and evaluation step.

The model corrupts half of its patch embeddings (models/masked_patches.py) and predicts, from each
corrupted patch's output token, the patch's 3-bit mean colour: the mean R, G and B of its pixels,
each quantized to 8 levels, one of 512 classes (docs/architectures.md#masked-patch-prediction). The
targets come from the train batch's images inside the step, so `config.loss='masked_patch'` needs
nothing in the batch but 'image' (the labels are not read); the model needs
config.model.masked_patch_prediction=True.
"""
import math

import jax
import jax.numpy as jnp
import optax

from vit_jax.models.interface import MaskedPatchOutput
from vit_jax.models.masked_patches import COLOUR_CLASSES
from vit_jax.train import losses

LEVELS = 8  # per channel: 3 bits, so LEVELS**3 == COLOUR_CLASSES

MASKED_PATCH_OUTPUTS = losses.ModelNeed(
    "masked_patch_prediction", "corrupted patch embeddings and per-patch colour predictions",
    "set config.model.masked_patch_prediction=True (ViT and hybrid models)")


def mean_colour_classes(images: jax.Array, grid: int) -> jax.Array:
  """(B, grid**2) int32 class of each patch's mean colour, patches row-major as the tokens are.

  Images are NHWC in [-1, 1] (the pipelines' value_range(-1, 1)), cut into a grid x grid array of
  equal patches (the model's token grid: a hybrid's patches cover its whole stride). Each channel's
  patch mean is mapped to [0, 1] and quantized to floor(8 * mean) clipped to 0..7 (8 equal bins; a
  mean on a bin edge goes to the upper bin, 1.0 to bin 7); the class is r * 64 + g * 8 + b.
  """
  batch, height, width, channels = images.shape
  if channels != 3 or height % grid or width % grid:
    raise ValueError(f"mean-colour targets need RGB images that a {grid}x{grid} token grid divides "
                     f"evenly, got {images.shape}")
  patches = images.astype(jnp.float32).reshape(
      batch, grid, height // grid, grid, width // grid, channels)
  means = (jnp.mean(patches, axis=(2, 4)) + 1.0) / 2.0  # (B, grid, grid, 3) in [0, 1]
  levels = jnp.clip(jnp.floor(means * LEVELS), 0, LEVELS - 1).astype(jnp.int32)
  classes = levels[..., 0] * LEVELS * LEVELS + levels[..., 1] * LEVELS + levels[..., 2]
  return classes.reshape(batch, grid * grid)


def patch_targets(output: MaskedPatchOutput, images: jax.Array) -> jax.Array:
  """The mean-colour classes of the patches the output's tokens stand for."""
  tokens = output.patch_logits.shape[1]
  grid = math.isqrt(tokens)
  if grid * grid != tokens:
    raise ValueError(f"masked patch prediction needs a square token grid, got {tokens} tokens")
  return mean_colour_classes(images, grid)


def _over_corrupted(values: jax.Array, corrupted: jax.Array) -> jax.Array:
  """(B,) mean of per-patch values over each example's corrupted patches."""
  weights = corrupted.astype(jnp.float32)
  return jnp.sum(values * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def patch_cross_entropy(output: MaskedPatchOutput, targets: jax.Array,
                        label_smoothing: float = 0.0) -> jax.Array:
  """(B, N) cross-entropy of each patch's prediction against its class (smoothed as labels are)."""
  return optax.softmax_cross_entropy(
      output.patch_logits.astype(jnp.float32),
      losses.smoothed_one_hot(targets, COLOUR_CLASSES, label_smoothing))


def masked_patch_hits(output: MaskedPatchOutput, batch: dict[str, jax.Array]) -> jax.Array:
  """(B,) fraction of each example's corrupted patches whose colour class is predicted right."""
  targets = patch_targets(output, batch["image"])
  right = (jnp.argmax(output.patch_logits, axis=-1) == targets).astype(jnp.float32)
  return _over_corrupted(right, output.corrupted)


@losses.register_dense_loss("masked_patch", needs=MASKED_PATCH_OUTPUTS, accuracy=masked_patch_hits)
def masked_patch_loss(output: MaskedPatchOutput, batch: dict[str, jax.Array], *,
                      label_smoothing: float = 0.0) -> jax.Array:
  """(B,) mean cross-entropy over each example's corrupted patches; the others are not scored.
  Every example has the same number of corrupted patches, so the batch mean is the mean over all
  corrupted patches of the batch."""
  targets = patch_targets(output, batch["image"])
  return _over_corrupted(patch_cross_entropy(output, targets, label_smoothing), output.corrupted)


def make_eval_step(model, seed: int):
  """eval_step(variables, batch, index) -> sums over the real examples (mask 1) of a padded batch:
  'correct' and 'loss_sum' over their corrupted patches, 'patches' (how many) and 'count' (examples).

  The model runs with return_dense=True and train=False (no dropout); the corruption of batch
  `index` is drawn from a key fixed by (seed, index), so every evaluation of a run sees the same
  corrupted inputs and the figures are comparable from one evaluation to the next.
  """
  dense = model.clone(return_dense=True)

  def eval_step(variables, batch, index):
    rng = jax.random.fold_in(jax.random.key(seed), index)
    output = dense.apply(variables, batch["image"], train=False, rngs={"dropout": rng})
    targets = patch_targets(output, batch["image"])
    weights = output.corrupted.astype(jnp.float32) * batch["mask"][:, None]
    right = (jnp.argmax(output.patch_logits, axis=-1) == targets).astype(jnp.float32)
    return {"correct": jnp.sum(right * weights),
            "loss_sum": jnp.sum(patch_cross_entropy(output, targets) * weights),
            "patches": jnp.sum(weights), "count": jnp.sum(batch["mask"])}

  return eval_step
