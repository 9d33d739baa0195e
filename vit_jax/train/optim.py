"""The optax chain from config: clipping, Adam/AdamW or SGD-momentum, masked decay, warmup + decay schedule."""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine or linear decay to end_learning_rate at total_steps."""
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  warmup = int(cfg.warmup_steps)
  if not 0 <= warmup < total_steps:
    raise ValueError(f"warmup_steps={warmup} must be in [0, total_steps={total_steps})")
  decay_steps = total_steps - warmup
  peak, end = float(cfg.learning_rate), float(cfg.end_learning_rate)
  if cfg.decay == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif cfg.decay == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  elif cfg.decay == "constant":
    after = optax.constant_schedule(peak)
  else:
    raise ValueError(f"optim.decay must be cosine, linear or constant, got {cfg.decay!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
  """True for weight matrices (kernels); biases, norm scales, cls and position embeddings are not decayed."""
  def is_decayed(path, leaf):
    if not path:  # a bare leaf (e.g. optax's params placeholder) is not a named weight
      return False
    name = getattr(path[-1], "key", str(path[-1]))
    return name == "kernel" and getattr(leaf, "ndim", 0) > 1
  return jax.tree_util.tree_map_with_path(is_decayed, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[
    optax.GradientTransformation, optax.Schedule]:
  """Builds the gradient transformation and returns it with its learning-rate schedule."""
  schedule = learning_rate_schedule(cfg, total_steps)
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  if cfg.name in ("adam", "adamw"):
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                     mu_dtype=jnp.dtype(cfg.mu_dtype) if cfg.mu_dtype else None))
  elif cfg.name == "sgd":
    parts.append(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))
  else:
    raise ValueError(f"optim.name must be adam, adamw or sgd, got {cfg.name!r}")
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(float(cfg.weight_decay), mask=decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
