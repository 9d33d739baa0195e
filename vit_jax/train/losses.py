"""Losses by name: `config.loss` picks a registered function; adding one is a function and a decorator.

A loss maps (logits (B, K), labels, label_smoothing) to a per-example loss (B,) in float32; the train
step averages it over the batch (and over micro-batches) and the eval step sums it over real examples.
Labels are int (B,) class ids or (B, K) targets: multi-hot for multi-label data, a distribution for
single-label data mixed or smoothed in the pipeline (mixup, cutmix, onehot).
"""
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from vit_jax.plugins import Registry

LossFn = Callable[..., jax.Array]
LOSSES: Registry[LossFn] = Registry("loss", "config.loss")
# Decorator: makes `fn(logits, labels, *, label_smoothing) -> (B,)` available as config.loss=name.
register_loss = LOSSES.register
AUTO = "auto"  # sigmoid_xent for multi-label sources, softmax_xent otherwise


def resolve_loss_name(name: str, multi_label: bool) -> str:
  """The registered loss a config names; 'auto' follows the data's label kind."""
  if name == AUTO:
    return "sigmoid_xent" if multi_label else "softmax_xent"
  LOSSES.get(name, choices_extra=(AUTO,))
  return name


def get_loss(name: str) -> LossFn:
  return LOSSES.get(resolve_loss_name(name, multi_label=False))


def smoothed_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """One-hot targets with label smoothing: (1 - s) on the true class plus s spread over all classes."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return one_hot * (1.0 - smoothing) + smoothing / num_classes


@register_loss("softmax_xent")
def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
                          ) -> jax.Array:
  """Softmax cross-entropy: int labels (smoothed by label_smoothing), or (B, K) target distributions
  (used as given: the pipeline already mixed or smoothed them)."""
  logits = logits.astype(jnp.float32)
  if labels.ndim == logits.ndim:
    return optax.softmax_cross_entropy(logits, labels.astype(jnp.float32))
  return optax.softmax_cross_entropy(logits, smoothed_one_hot(labels, logits.shape[-1], label_smoothing))


@register_loss("sigmoid_xent")
def sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
                          ) -> jax.Array:
  """Independent binary cross-entropies summed over classes (as big_vision), for multi-hot (B, K)
  targets; int labels count as one-hot. label_smoothing moves each target s/2 towards 1/2."""
  logits = logits.astype(jnp.float32)
  targets = labels if labels.ndim == logits.ndim else jax.nn.one_hot(labels, logits.shape[-1])
  targets = targets.astype(jnp.float32) * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
