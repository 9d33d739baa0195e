"""The learning rate as a function of the step, from config.optim: linear warmup, then a decay.

Kept apart from the optax chain (optim.py): the trainer logs it and the chain scales by it, and its
keys (learning_rate, end_learning_rate, warmup_steps, decay, boundaries, decay_factor) are all it reads.
"""
import ml_collections
import optax

DECAYS = ("cosine", "linear", "constant", "steps")


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine or linear decay to end_learning_rate at total_steps,
  a constant, or 'steps': the peak times decay_factor**k after the k-th of `boundaries` (fractions of
  total_steps, counted from step 0)."""
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  warmup = int(cfg.warmup_steps)
  if not 0 <= warmup < total_steps:
    raise ValueError(f"warmup_steps={warmup} must be in [0, total_steps={total_steps})")
  if cfg.boundaries and cfg.decay != "steps":
    raise ValueError(f"optim.boundaries={cfg.boundaries} is only read by optim.decay='steps', "
                     f"not {cfg.decay!r}; clear it or set decay='steps'")
  decay_steps = total_steps - warmup
  peak, end = float(cfg.learning_rate), float(cfg.end_learning_rate)
  if cfg.decay == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif cfg.decay == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  elif cfg.decay == "constant":
    after = optax.constant_schedule(peak)
  elif cfg.decay == "steps":
    after = optax.piecewise_constant_schedule(peak, {
        step - warmup: float(cfg.decay_factor)
        for step in boundary_steps(cfg.boundaries, total_steps, warmup)})
  else:
    raise ValueError(f"optim.decay must be {', '.join(DECAYS)}, got {cfg.decay!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def boundary_steps(boundaries, total_steps: int, warmup: int) -> list[int]:
  """optim.boundaries (increasing fractions in (0, 1) of total_steps) as step numbers after warmup."""
  if not boundaries:
    raise ValueError("optim.decay='steps' needs optim.boundaries: fractions of the total steps, "
                     "e.g. (1/3, 2/3, 8/9) for BiT's divide-by-10 at epochs 30, 60 and 80 of 90")
  fractions = [float(b) for b in boundaries]
  if any(not 0 < b < 1 for b in fractions):
    raise ValueError(
        f"optim.boundaries={tuple(boundaries)} must be fractions of the total steps in (0, 1)")
  steps = [round(b * total_steps) for b in fractions]
  if any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] <= warmup:
    raise ValueError(
        f"optim.boundaries={tuple(boundaries)} are steps {steps} of {total_steps}: they must increase "
        f"and come after the {warmup} warmup steps")
  return steps
