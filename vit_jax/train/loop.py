"""The one trainer, in explicit phases: data -> Setup (build.setup) -> init/resume/load -> loop -> evals.

The loop orchestrates: everything derived from the config comes from Setup; it reads only the keys
of the phases it runs itself (data pipeline, checkpoints, logging cadence, evaluators, init_from).
"""
import contextlib
import math
import os
import signal
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from vit_jax import checkpoint, configuration, flops, parallel, paths, public_checkpoints, run_files
from vit_jax import whole_files
from vit_jax.data import pipeline, sources
from vit_jax.train import build, finiteness, optim
from vit_jax.train import evaluators as evaluators_lib
from vit_jax.train.metric_log import MetricLog
from vit_jax.train.state import TrainState


def setup(config: ml_collections.ConfigDict, source: sources.Source) -> build.Setup:
  """Setup for a data source: its class count, train-split size and label kind size the model, the
  schedule and the loss."""
  return build.setup(config, source.num_classes, source.num_examples(config.data.train_split),
                     multi_label=source.multi_label)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Keeps the resolved config of the run in <workdir>/config.json (process 0)."""
  if jax.process_index() != 0:
    return
  whole_files.write_text(os.path.join(workdir, "config.json"),
                         config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def load_init_weights(state: TrainState, s: build.Setup, init_from: str, workdir: str,
                      init_posemb: str = "interpolate_2d") -> TrainState:
  """Fine-tuning: the pretrained weights of `init_from` in a fresh state, the head reset and the
  position embeddings resized as the model's interface and `init_posemb` say; a report goes to
  init_report.txt. `init_from` may name a public checkpoint (vit_jax/public_checkpoints.py): its
  file is read."""
  interface = s.model.interface
  init_from = public_checkpoints.resolve(init_from)
  params, report = checkpoint.load_pretrained(
      jax.device_get(state.params), init_from, has_class_token=interface.class_token,
      keep_pre_logits=interface.representation_layer, init_posemb=init_posemb)
  print(report.format(list_loaded=False))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "init_report.txt"), "w") as f:
      f.write(report.format() + "\n")
  params = jax.device_put(params, s.state_shardings.params)
  opt_state = jax.jit(s.tx.init, out_shardings=s.state_shardings.opt_state)(params)
  model_state, lines = checkpoint.load_pretrained_model_state(
      jax.device_get(state.model_state), init_from)
  for line in lines:
    print(line)
  model_state = jax.device_put(model_state, s.state_shardings.model_state)
  return state.replace(params=params, opt_state=opt_state, model_state=model_state)


def initial_state(s: build.Setup, ckpt: "checkpoint.Checkpointer", workdir: str, init_from: str,
                  restore_step: Optional[int] = None, init_posemb: str = "interpolate_2d"
                  ) -> tuple[TrainState, int]:
  """Resume from the workdir if it has a checkpoint (from `restore_step` if given: the newer steps
  are set aside, not deleted), else init (and load pretrained weights, their position embeddings
  carried to a new grid as `init_posemb` says).

  Returns the state and the data position (the number of batches already consumed).
  """
  if restore_step is not None:
    ckpt.set_aside_newer_than(restore_step)  # Refuses, naming the kept steps, a step not kept.
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(restore_step, abstract_state=s.abstract_state)
    step = int(jax.device_get(state.step))
    print(f"resuming from step {step} of {s.total_steps} ({ckpt.directory})"
          + (": already finished" if step >= s.total_steps else ""))
    return state, int(extra["data_position"])
  state = s.init_state()
  if init_from:
    print(f"starting at step 0 of {s.total_steps} from the weights of {init_from}")
    return load_init_weights(state, s, init_from, workdir, init_posemb), 0
  print(f"starting at step 0 of {s.total_steps} from a random initialisation")
  return state, 0


def last_good(ckpt: "checkpoint.Checkpointer") -> str:
  """Where a rerun resumes from, for error messages (waits for a save in flight)."""
  ckpt.wait_until_finished()
  step = ckpt.latest_step()
  if step is None:
    return f"no checkpoint has been written yet in {ckpt.directory}; a rerun starts from scratch"
  return f"the last good checkpoint is step {step} in {ckpt.directory}, where a rerun resumes"


def check_before_save(state: TrainState, step: int, ckpt: "checkpoint.Checkpointer") -> None:
  """Refuses to checkpoint NaN or Inf: the run stops, and the last good step stays newest (kept from
  rotation, since nothing newer is written)."""
  bad = finiteness.nonfinite_paths(
      {"params": state.params, "opt_state": state.opt_state, "model_state": state.model_state})
  if bad:
    raise FloatingPointError(
        f"the train state holds NaN or Inf at step {step} ({len(bad)} arrays, e.g. "
        f"{', '.join(bad[:3])}); it was not checkpointed: {last_good(ckpt)}. Lower "
        "optim.learning_rate, enable optim.grad_clip_norm, or skip such steps with "
        "optim.skip_nonfinite=N.")


def skipped_steps(state: TrainState) -> dict[str, float]:
  """With optim.skip_nonfinite: the steps skipped in a row up to now and in all (read from device)."""
  skipped = optim.nonfinite_steps(state.opt_state)
  if skipped is None:
    return {}
  in_a_row, total, _ = jax.device_get(skipped)
  return {"nonfinite_in_a_row": float(in_a_row), "skipped_nonfinite_steps": float(total)}


def check_skipped(skipped: dict[str, float], step: int, skip_limit: int,
                  ckpt: "checkpoint.Checkpointer") -> None:
  """optim.skip_nonfinite=N: N skipped steps in a row stop the run (checked when logging and
  before each checkpoint)."""
  if skip_limit and skipped["nonfinite_in_a_row"] >= skip_limit:
    raise FloatingPointError(
        f"{int(skipped['nonfinite_in_a_row'])} steps in a row up to step {step} had a non-finite "
        f"gradient and were skipped (optim.skip_nonfinite={skip_limit}); {last_good(ckpt)}. Lower "
        "optim.learning_rate or enable optim.grad_clip_norm.")


def check_metrics(metrics: dict[str, float], step: int, skip_limit: int,
                  ckpt: "checkpoint.Checkpointer") -> None:
  """On a logging step: a non-finite loss stops the run, unless optim.skip_nonfinite skips such
  steps; then `skip_limit` skipped steps in a row stop it."""
  if skip_limit:
    check_skipped(metrics, step, skip_limit, ckpt)
  elif not np.isfinite(metrics["loss"]):
    raise FloatingPointError(
        f"loss is {metrics['loss']} at step {step}; {last_good(ckpt)}. Lower optim.learning_rate, "
        "enable optim.grad_clip_norm, or skip such steps with optim.skip_nonfinite=N.")


def evaluate_all(evaluators: list[evaluators_lib.Evaluator], state: TrainState
                 ) -> dict[str, float]:
  """Runs evaluators on the state's weights, metrics named '<evaluator>_<metric>'; with
  optim.ema_decay also on the moving average of the weights, named '<evaluator>_ema_<metric>'."""
  weights = {"": state.params}
  ema = optim.ema_params(state.opt_state)
  if ema is not None:
    weights["ema_"] = jax.tree.map(lambda e, p: e.astype(p.dtype), ema, state.params)
  return {f"{e.name}_{prefix}{key}": value
          for prefix, params in weights.items() for e in evaluators
          for key, value in e.run({"params": params, **state.model_state}).items()}


class _Preemption:
  """SIGTERM (the preemption notice) -> the step after which the loop saves and stops.

  One process: a signal handler sets a flag. Several processes: JAX's preemption notifier (started
  by jax.distributed) takes SIGTERM on any of them, and its sync manager picks a step at which all
  of them save and stop together; a process stopping alone would leave the others waiting for it
  in a collective.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._together = jax.process_count() > 1

  def __enter__(self):
    if self._together:
      return self  # JAX's handler must keep SIGTERM.
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step`; every process must ask at every step."""
    if self._together:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       restore_step: Optional[int] = None) -> dict[str, float]:
  """Trains (resuming if the workdir has a checkpoint, from `restore_step` if given), runs every
  evaluator at the end, returns the final metrics ('<evaluator>_<metric>') with the step.

  Values that cannot work fail first, naming their key (configuration.check_values); `~` in paths is
  expanded. One run at a time writes a workdir (a lock held by process 0); a checkpoint never holds
  NaN or Inf; an error stops the run only after a save in flight has finished or failed cleanly.
  """
  config = config.copy_and_resolve_references()
  configuration.expand_paths(config)
  workdir = paths.expand(workdir)
  configuration.check_values(config, workdir)
  with checkpoint.workdir_lock.hold(workdir), contextlib.ExitStack() as stack:
    source = sources.get_source(config.data)
    s = setup(config, source)
    save_config(config, workdir)
    if jax.process_index() == 0:  # for the commands that name classes (python -m vit_jax.predict)
      run_files.write_class_names(workdir, source.class_names())
    ckpt = stack.enter_context(checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"), save_every=config.train.checkpoint_every,
        keep=config.train.keep_checkpoints))
    state, position = initial_state(s, ckpt, workdir, config.init_from, restore_step,
                                    config.init_posemb)
    log = MetricLog(workdir, enabled=jax.process_index() == 0,
                    resume_step=int(jax.device_get(state.step)))
    stack.callback(log.close)
    return _train(config, s, source, ckpt, log, state, position)


def _train(config, s: build.Setup, source, ckpt, log: MetricLog, state: TrainState, position: int
           ) -> dict[str, float]:
  step = int(jax.device_get(state.step))
  is_main = jax.process_index() == 0
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(s.abstract_state.params))
  print(f"{config.model_name}: {n_params:,} parameters; mesh {dict(s.mesh.shape)} ({config.sharding}); "
        f"{s.total_steps} steps of batch {s.batch_size}; loss {s.loss_name}")
  evaluators = evaluators_lib.build_evaluators(config.evals, s, source, config.data,
                                               config.eval_batch_size)

  if config.data.global_order:
    parallel.check_process_rows(parallel.batch_sharding(s.mesh, s.rules, 1), s.batch_size)
  batches = pipeline.train_batches(
      config.data, source=source, batch_size=s.batch_size, image_size=s.image_size,
      seed=s.seed, start_step=position, process_index=jax.process_index(),
      process_count=jax.process_count(), augment=config.data.augment)

  # MFU: analytic training FLOPs per image over the peak of all devices at the compute dtype.
  train_flops = flops.train_flops_per_example(s.model)
  peak = flops.peak_flops_per_device(jnp.dtype(s.model.dtype).name) * s.mesh.devices.size
  log_every, save_every = config.train.log_every, config.train.checkpoint_every
  skip_limit = config.optim.skip_nonfinite

  progress = tqdm.tqdm(total=s.total_steps, initial=step, disable=not is_main, unit="step",
                       dynamic_ncols=True)
  window_start, window_steps = time.perf_counter(), 0
  with progress, _Preemption() as preemption, parallel.activate(s.mesh, s.rules):
    while step < s.total_steps:
      batch = parallel.global_batch(next(batches), s.mesh, s.rules)
      state, metrics = s.train_step(state, batch)
      step += 1
      window_steps += 1
      progress.update(1)
      if step % log_every == 0 or step == s.total_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics.update(skipped_steps(state))
        check_metrics(metrics, step, skip_limit, ckpt)
        elapsed = time.perf_counter() - window_start
        metrics["images_per_sec"] = window_steps * s.batch_size / max(elapsed, 1e-9)
        metrics["mfu"] = metrics["images_per_sec"] * train_flops / peak
        metrics["skipped_examples"] = float(batches.skipped)
        log.write(step, metrics)
        progress.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}")
        window_start, window_steps = time.perf_counter(), 0
      due = [e for e in evaluators if e.due(step, s.total_steps)]
      if due:
        log.write(step, evaluate_all(due, state))
      # Every checkpoint_every steps; the last step and a preemption always save.
      preempted = preemption.reached(step)
      force = step == s.total_steps or preempted
      if force or step % save_every == 0:
        if skip_limit:
          check_skipped(skipped_steps(state), step, skip_limit, ckpt)
        check_before_save(state, step, ckpt)
        ckpt.save(step, state, {"data_position": step}, force=force)
      if preempted:
        ckpt.wait_until_finished()
        raise SystemExit(f"preempted (SIGTERM): saved step {step}; rerun the same command to resume")
  ckpt.wait_until_finished()
  result = evaluate_all(evaluators, state)
  log.write(step, result)
  return {"step": step, **result}
