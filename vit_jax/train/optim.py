"""The optax chain from config.optim: an optimizer by name, per-parameter rules, an EMA of the weights.

    [freeze: clip -> optimizer (with its weight decay)] -> [lr multipliers] -> [EMA of the weights]

Optimizers are a registry of small functions (`register_optimizer`): adam, adamw, sgd, and
'optax:<name>' for any optax optimizer or gradient transformation with optim.args as its keyword
arguments. Every params-shaped part of the state keeps the params' tree (frozen leaves are
optax.MaskedNode), so `map_params` (optax.tree_map_params keeping those nodes) lays it out like the params.
"""
import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax.plugins import Registry
from vit_jax.train.param_rules import ParamRules
from vit_jax.train.schedules import learning_rate_schedule

PerLeaf = Callable[[Any], Any]  # a params-shaped tree -> one value (float, array, bool) per leaf
OptimizerFn = Callable[[ml_collections.ConfigDict, optax.GradientTransformation, optax.Schedule],
                       optax.GradientTransformation]
OPTAX_PREFIX = "optax:"
OPTIMIZERS: Registry[OptimizerFn] = Registry("optimizer", "optim.name")
# Registers fn(cfg, weight_decay, schedule) -> the optimizer's gradient transformation. weight_decay
# adds rate * param to the updates (rates from optim.weight_decay, the decay mask and optim.wd_mults;
# optax.identity() when there is none): the function places it, so it decides whether the decay is an
# L2 term (before the moments) or decoupled (after them).
register_optimizer = OPTIMIZERS.register


def available_optimizers() -> tuple[str, ...]:
  return OPTIMIZERS.names()


def _scale_by_adam(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             mu_dtype=jnp.dtype(cfg.mu_dtype) if cfg.mu_dtype else None)


@register_optimizer("adamw")
def adamw(cfg, weight_decay, schedule):
  """Adam with decoupled weight decay (Loshchilov & Hutter): update = -lr * (adam(g) + wd * p)."""
  return optax.chain(_scale_by_adam(cfg), weight_decay, optax.scale_by_learning_rate(schedule))


@register_optimizer("adam")
def adam(cfg, weight_decay, schedule):
  """Adam with weight decay as L2: wd * p joins the gradient before the moments (torch.optim.Adam)."""
  return optax.chain(weight_decay, _scale_by_adam(cfg), optax.scale_by_learning_rate(schedule))


@register_optimizer("sgd")
def sgd(cfg, weight_decay, schedule):
  """SGD with (Nesterov) momentum; weight decay is added after it: -lr * (trace(g) + wd * p)."""
  return optax.chain(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov), weight_decay,
                     optax.scale_by_learning_rate(schedule))


def _optax_by_name(name: str, cfg: ml_collections.ConfigDict, rates: Optional[PerLeaf],
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """optax.<name>(**optim.args): an optimizer gets learning_rate=schedule and decoupled weight decay
  scaled by the schedule; a gradient transformation is followed by the decay and -schedule."""
  factory = getattr(optax, name, None)
  if not callable(factory):
    raise ValueError(f"optim.name={OPTAX_PREFIX + name!r}: optax has no function {name!r}")
  args = cfg.args.to_dict()
  if "learning_rate" in args:
    raise ValueError("optim.args.learning_rate: the learning rate is optim.learning_rate and the "
                     "schedule keys (warmup_steps, decay, ...)")
  takes_lr = "learning_rate" in inspect.signature(factory).parameters
  try:
    tx = factory(**args, **({"learning_rate": schedule} if takes_lr else {}))
  except TypeError as e:
    raise ValueError(
        f"optim.args {args} do not fit optax.{name}{inspect.signature(factory)}: {e}") from e
  if not isinstance(tx, optax.GradientTransformation):
    raise ValueError(f"optim.name={OPTAX_PREFIX + name!r}: optax.{name} does not build a gradient "
                     f"transformation (got {type(tx).__name__})")
  if takes_lr:
    return optax.chain(tx, add_scheduled_weight_decay(rates, schedule)) if rates else tx
  return optax.chain(tx, add_weight_decay(rates) if rates else optax.identity(),
                     optax.scale_by_learning_rate(schedule))


def _require_params(params: Any, key: str) -> None:
  if params is None:
    raise ValueError(f"{key} needs the params: call tx.update(grads, opt_state, params)")


def add_weight_decay(rates: PerLeaf) -> optax.GradientTransformation:
  """updates + rate * param per leaf (leaves with rate 0.0 are left alone)."""
  def update(updates, state, params=None):
    _require_params(params, "optim.weight_decay")
    return jax.tree.map(lambda u, p, r: u + r * p if r else u, updates, params, rates(updates)), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def add_scheduled_weight_decay(rates: PerLeaf,
                               schedule: optax.Schedule) -> optax.GradientTransformation:
  """updates - schedule(step) * rate * param: decoupled weight decay after a complete optimizer."""
  def init(_):
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    _require_params(params, "optim.weight_decay")
    lr = schedule(state.count)
    updates = jax.tree.map(lambda u, p, r: u - lr * r * p if r else u, updates, params, rates(updates))
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))
  return optax.GradientTransformation(init, update)


def scale_by_multipliers(multipliers: PerLeaf) -> optax.GradientTransformation:
  """updates * multiplier per leaf: per-parameter learning-rate multipliers (a float or an array that
  broadcasts, e.g. one value per layer along a scanned block's leading axis)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u if isinstance(m, float) and m == 1.0 else
                        u * jnp.asarray(m, u.dtype), updates, multipliers(updates)), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def freeze(inner: optax.GradientTransformation, frozen: PerLeaf) -> optax.GradientTransformation:
  """Zero updates for frozen leaves; `inner` (moments, clipping norm, ...) sees only the others.

  optax.MaskedNode stands in for the frozen leaves in `inner`'s state, so they cost no memory; lay the
  state out with `map_params`, which keeps those nodes (optax.tree_map_params alone trips over them).
  """
  def labels(tree):
    return jax.tree.map(lambda f: "frozen" if f else "trained", frozen(tree))
  return optax.transforms.partition({"trained": inner, "frozen": optax.set_to_zero()}, labels)


def map_params(tx: optax.GradientTransformation, fn: Callable[..., Any], opt_state: Any, *rest: Any,
               transform_non_params: Optional[Callable[[Any], Any]] = None) -> Any:
  """optax.tree_map_params for these chains: fn(state_leaf, *rest_leaves) on every params-shaped leaf
  of opt_state (e.g. the param's sharding), frozen parameters' optax.MaskedNode kept as they are."""
  def is_masked(x):
    return isinstance(x, optax.MaskedNode)
  return optax.tree_map_params(
      tx, lambda leaf, *others: leaf if is_masked(leaf) else fn(leaf, *others), opt_state, *rest,
      transform_non_params=transform_non_params, is_leaf=is_masked)


class EmaState(NamedTuple):
  """The exponential moving average of the weights, float32 and shaped like the params."""
  ema: Any


def ema_of_params(decay: float) -> optax.GradientTransformation:
  """Last in the chain: ema = decay * ema + (1 - decay) * (params + updates), starting at the params.

  It lives in the optimizer state, so it is sharded like the params and checkpointed with them.
  """
  def init(params):
    return EmaState(ema=jax.tree.map(lambda p: jnp.array(p, jnp.float32), params))

  def update(updates, state, params=None):
    _require_params(params, "optim.ema_decay")
    ema = jax.tree.map(lambda e, p, u: decay * e + (1.0 - decay) * (
        p.astype(jnp.float32) + u.astype(jnp.float32)), state.ema, params, updates)
    return updates, EmaState(ema=ema)
  return optax.GradientTransformation(init, update)


def ema_params(opt_state: Any) -> Optional[Any]:
  """The EMA of the weights kept by optim.ema_decay > 0 (a float32 params tree), or None."""
  states = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaState))
  return next((s.ema for s in states if isinstance(s, EmaState)), None)


# optax.apply_if_finite gives up and applies a non-finite update after this many in a row; the loop
# stops the run after optim.skip_nonfinite instead, so it never should.
_NEVER_APPLY = 2**31 - 2


def skip_nonfinite_updates(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """tx, except that a step whose gradient holds a NaN or an Inf changes no parameter and no
  optimizer state; optax.apply_if_finite counts such steps (see nonfinite_steps)."""
  return optax.apply_if_finite(tx, max_consecutive_errors=_NEVER_APPLY)


def nonfinite_steps(opt_state: Any) -> Optional[tuple[Any, Any, Any]]:
  """(skipped in a row, skipped in all, whether the last update was applied) with
  optim.skip_nonfinite, as arrays on device; None without it."""
  states = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ApplyIfFiniteState))
  state = next((s for s in states if isinstance(s, optax.ApplyIfFiniteState)), None)
  if state is None:
    return None
  return state.notfinite_count, state.total_notfinite, state.last_finite


def optimizer_core(cfg: ml_collections.ConfigDict, rules: ParamRules,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer optim.name names, with its weight decay."""
  weight_decay = float(cfg.weight_decay)
  rates = (lambda tree: rules.decay_rates(tree, weight_decay)) if weight_decay else None
  if cfg.name.startswith(OPTAX_PREFIX):
    return _optax_by_name(cfg.name[len(OPTAX_PREFIX):], cfg, rates, schedule)
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"optim.name must be one of {', '.join(available_optimizers())} or "
                     f"'{OPTAX_PREFIX}<name>' (any optax optimizer, with optim.args), got {cfg.name!r}")
  if cfg.args:
    raise ValueError(f"optim.args={cfg.args.to_dict()} is only read by '{OPTAX_PREFIX}<name>' "
                     f"optimizers; {cfg.name!r} reads its own keys (b1, b2, eps, momentum, ...)")
  return OPTIMIZERS.get(cfg.name)(cfg, add_weight_decay(rates) if rates else optax.identity(), schedule)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[
    optax.GradientTransformation, optax.Schedule]:
  """Builds the gradient transformation and returns it with its learning-rate schedule."""
  schedule = learning_rate_schedule(cfg, total_steps)
  rules = ParamRules.from_config(cfg)
  if not 0 <= cfg.ema_decay < 1:
    raise ValueError(f"optim.ema_decay must be in [0, 1) (0 = off), got {cfg.ema_decay}")
  parts = [optax.clip_by_global_norm(float(cfg.grad_clip_norm))] if cfg.grad_clip_norm else []
  parts.append(optimizer_core(cfg, rules, schedule))
  if rules.freeze:
    parts = [freeze(optax.chain(*parts), rules.frozen)]
  if rules.scales_lr:
    parts.append(scale_by_multipliers(rules.lr_multipliers))
  if cfg.ema_decay:
    parts.append(ema_of_params(float(cfg.ema_decay)))
  tx = optax.chain(*parts)
  if cfg.skip_nonfinite < 0:
    raise ValueError(f"optim.skip_nonfinite must be >= 0 (0 = off), got {cfg.skip_nonfinite}")
  if cfg.skip_nonfinite:
    tx = skip_nonfinite_updates(tx)

  def init(params):
    if jax.tree.leaves(params):  # optax.tree_map_params inits with a leafless placeholder
      rules.check(params)
    return tx.init(params)
  return optax.GradientTransformationExtraArgs(init, tx.update), schedule
