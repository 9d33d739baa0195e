"""Pure train and eval steps: `train_step(state, batch) -> (state, metrics)`, jitted once by build.setup."""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.train.losses import LossFn, dense_accuracy, takes_dense_outputs
from vit_jax.train.optim import nonfinite_steps
from vit_jax.train.state import TrainState

Batch = dict[str, jax.Array]


def accuracy_hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1.0 where the top class is right: the label for single-label data, any positive for multi-hot."""
  top = jnp.argmax(logits, axis=-1)
  if labels.ndim == logits.ndim:
    return jnp.take_along_axis(labels, top[:, None], axis=-1)[:, 0].astype(jnp.float32)
  return (top == labels).astype(jnp.float32)


def top_k_hits(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label (any positive, for multi-hot) is among the k highest-scored classes."""
  _, top = jax.lax.top_k(logits, min(k, logits.shape[-1]))
  if labels.ndim == logits.ndim:
    return jnp.max(jnp.take_along_axis(labels, top, axis=-1), axis=-1).astype(jnp.float32)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    loss_fn: LossFn, label_smoothing: float = 0.0, accum_steps: int = 1
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the step around a registered loss (vit_jax.train.losses). With accum_steps > 1 the batch
  (every entry of it) is split into micro-batches whose gradients are averaged before a single
  optimizer update (same result as one big batch, less activation memory).

  A dense loss (losses.takes_dense_outputs) gets the model's training output, e.g. a DenseOutput
  (build the model with return_dense=True), and the whole batch; its accuracy is the class logits'
  top-1, or the loss's own (losses.dense_accuracy: masked patch prediction's is over the corrupted
  patches)."""
  dense = takes_dense_outputs(loss_fn)
  dense_hits = dense_accuracy(loss_fn)

  def objective(params, model_state, batch, rng):
    variables = {"params": params, **model_state}
    if model_state:  # e.g. BatchNorm statistics, updated by the forward pass
      output, model_state = model.apply(variables, batch["image"], train=True,
                                        rngs={"dropout": rng}, mutable=list(model_state))
    else:
      output = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng})
    if dense:
      loss = jnp.mean(loss_fn(output, batch, label_smoothing=label_smoothing))
      hits = (dense_hits(output, batch) if dense_hits else
              accuracy_hits(output.cls_logits, batch["label"]))
    else:
      loss = jnp.mean(loss_fn(output, batch["label"], label_smoothing=label_smoothing))
      hits = accuracy_hits(output, batch["label"])
    return loss, (jnp.mean(hits), model_state)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def train_step(state: TrainState, batch: Batch):
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    if accum_steps == 1:
      (loss, (acc, model_state)), grads = grad_fn(
          state.params, state.model_state, batch, step_rng)
    else:
      batch_size = batch["image"].shape[0]
      if batch_size % accum_steps:
        raise ValueError(f"batch size {batch_size} is not divisible by accum_steps={accum_steps}")
      micro = lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:])

      def accumulate(carry, inputs):
        sums, model_state = carry
        index, micro_batch = inputs
        (loss_i, (acc_i, model_state)), grads_i = grad_fn(
            state.params, model_state, micro_batch, jax.random.fold_in(step_rng, index))
        return (jax.tree.map(jnp.add, sums, (loss_i, acc_i, grads_i)), model_state), None

      zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
      ((loss, acc, grads), model_state), _ = jax.lax.scan(
          accumulate, (zeros, state.model_state),
          (jnp.arange(accum_steps), jax.tree.map(micro, dict(batch))))
      loss, acc, grads = jax.tree.map(lambda x: x / accum_steps, (loss, acc, grads))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    skipped = nonfinite_steps(opt_state)
    if skipped is not None:  # optim.skip_nonfinite: a skipped step leaves BatchNorm statistics too
      applied = skipped[2]
      model_state = jax.tree.map(lambda new, old: jnp.where(applied, new, old),
                                 model_state, state.model_state)
    metrics = {
        "loss": loss, "accuracy": acc, "grad_norm": optax.global_norm(grads),
        "learning_rate": schedule(state.step),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              rng=jax.random.key_data(rng), model_state=model_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, loss_fn: LossFn, *, with_logits: bool = False
                   ) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Sums of top-1 and top-5 hits, loss and real examples over a padded batch (mask 0 = padding);
  with_logits also returns the batch's float32 logits (for metrics that rank every score).

  The step takes all variables: {'params': ..., plus any model state such as 'batch_stats'}.
  """

  def eval_step(variables, batch: Batch):
    logits = model.apply(variables, batch["image"], train=False)
    mask = batch["mask"]
    labels = batch["label"]
    sums = {
        "correct": jnp.sum(accuracy_hits(logits, labels) * mask),
        "correct_top5": jnp.sum(top_k_hits(logits, labels, 5) * mask),
        "loss_sum": jnp.sum(loss_fn(logits, labels) * mask),
        "count": jnp.sum(mask),
    }
    if with_logits:
      sums["logits"] = logits.astype(jnp.float32)
    return sums

  return eval_step
