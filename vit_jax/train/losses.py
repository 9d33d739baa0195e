"""Losses by name: `config.loss` picks a registered function; adding one is a function and a decorator.

A loss maps (logits (B, K), labels, label_smoothing) to a per-example loss (B,) in float32; the train
step averages it over the batch (and over micro-batches) and the eval step sums it over real examples.
Labels are int (B,) class ids or (B, K) targets: multi-hot for multi-label data, a distribution for
single-label data mixed or smoothed in the pipeline (mixup, cutmix, onehot).

A dense loss (register_dense_loss) trains models with dense outputs (ModelInterface.dense_outputs):
it maps (the model's training output, e.g. LV-ViT's DenseOutput; the whole train batch, whose extra
entries carry its targets; label_smoothing; its options from config.loss_options) to (B,). Evaluation
then scores the model's plain logits with softmax_xent.
"""
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from vit_jax.plugins import Registry

LossFn = Callable[..., jax.Array]
LOSSES: Registry[LossFn] = Registry("loss", "config.loss")
# Decorator: makes `fn(logits, labels, *, label_smoothing) -> (B,)` available as config.loss=name.
register_loss = LOSSES.register
AUTO = "auto"  # sigmoid_xent for multi-label sources, softmax_xent otherwise


def register_dense_loss(name: str) -> Callable[[LossFn], LossFn]:
  """Decorator: makes `fn(output, batch, *, label_smoothing, **options) -> (B,)` available as
  config.loss=name, for models with dense outputs (see the module doc)."""
  def register(fn: LossFn) -> LossFn:
    fn.takes_dense_outputs = True
    return LOSSES.register(name)(fn)
  return register


def takes_dense_outputs(fn: LossFn) -> bool:
  return getattr(fn, "takes_dense_outputs", False)


def bind_options(name: str, fn: LossFn, options: dict[str, Any]) -> LossFn:
  """fn with config.loss_options bound; an option the loss does not take is an error naming it."""
  accepted = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name != "label_smoothing"]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"config.loss_options.{unknown[0]}: loss {name!r} takes no such option; it "
                     f"takes {', '.join(accepted) or 'none'}")
  if not options:
    return fn

  def bound(*args, **kwargs):
    return fn(*args, **kwargs, **options)
  bound.takes_dense_outputs = takes_dense_outputs(fn)
  return bound


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
