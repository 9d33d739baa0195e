"""Losses by name: `config.loss` picks a registered function; adding one is a function and a decorator.

A loss maps (logits (B, K), labels, label_smoothing) to a per-example loss (B,) in float32; the train
step averages it over the batch (and over micro-batches) and the eval step sums it over real examples.
Labels are int (B,) class ids or (B, K) targets: multi-hot for multi-label data, a distribution for
single-label data mixed or smoothed in the pipeline (mixup, cutmix, onehot).

A dense loss (register_dense_loss) trains a model on what it returns with return_dense=True, for the
model outputs it names (ModelNeed: per-token logits by default, ModelInterface.dense_outputs): it
maps (the model's training output, e.g. LV-ViT's DenseOutput; the whole train batch, whose extra
entries carry its targets, or whose images do; label_smoothing; its options from config.loss_options)
to (B,). The train step's accuracy is the class logits' top-1 unless the loss gives its own per-example
hits; evaluation scores the model's plain logits with softmax_xent.
"""
import dataclasses
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from vit_jax.plugins import Registry

LossFn = Callable[..., jax.Array]
LOSSES: Registry[LossFn] = Registry("loss", "config.loss")
# Decorator: makes `fn(logits, labels, *, label_smoothing) -> (B,)` available as config.loss=name.
register_loss = LOSSES.register
AUTO = "auto"  # sigmoid_xent for multi-label sources, softmax_xent otherwise


@dataclasses.dataclass(frozen=True)
class ModelNeed:
  """What a dense loss needs of the model: a ModelInterface flag, and the words of the error that
  Setup raises for a model without it."""
  flag: str     # the ModelInterface field that must be True
  outputs: str  # what the loss trains on, e.g. 'per-token outputs'
  hint: str     # what to do instead


PER_TOKEN_OUTPUTS = ModelNeed(
    "dense_outputs", "per-token outputs",
    "use an LV-ViT model, a ViT with config.model.token_head=True, or a classification loss")
# fn(output, batch) -> (B,) float32 hits: the train step's 'accuracy' for a dense loss.
AccuracyFn = Callable[[Any, dict[str, jax.Array]], jax.Array]


def register_dense_loss(name: str, *, needs: ModelNeed = PER_TOKEN_OUTPUTS,
                        accuracy: Optional[AccuracyFn] = None) -> Callable[[LossFn], LossFn]:
  """Decorator: makes `fn(output, batch, *, label_smoothing, **options) -> (B,)` available as
  config.loss=name, for models that have the outputs `needs` names (see the module doc);
  `accuracy(output, batch) -> (B,)` replaces the class logits' top-1 as the step's accuracy."""
  def register(fn: LossFn) -> LossFn:
    fn.takes_dense_outputs = True
    fn.model_need = needs
    fn.dense_accuracy = accuracy
    return LOSSES.register(name)(fn)
  return register


def takes_dense_outputs(fn: LossFn) -> bool:
  return getattr(fn, "takes_dense_outputs", False)


def model_need(fn: LossFn) -> ModelNeed:
  """The model outputs a dense loss trains on."""
  return getattr(fn, "model_need", PER_TOKEN_OUTPUTS)


def dense_accuracy(fn: LossFn) -> Optional[AccuracyFn]:
  """A dense loss's own per-example accuracy, or None (the class logits' top-1)."""
  return getattr(fn, "dense_accuracy", None)


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
  bound.model_need = model_need(fn)
  bound.dense_accuracy = dense_accuracy(fn)
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
