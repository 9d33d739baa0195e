"""The one trainer, in explicit phases: data -> mesh -> model -> shardings -> init/resume/load -> loop -> eval."""
import logging
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from vit_jax import checkpoint, flops, parallel
from vit_jax import evaluate as eval_metrics
from vit_jax.data import pipeline, sources
from vit_jax.train import build
from vit_jax.train.metric_log import MetricLog
from vit_jax.train.state import TrainState
from vit_jax.train.step import make_eval_step


def setup(config: ml_collections.ConfigDict, source: sources.Source) -> build.Setup:
  """Phases 1-3 for a data source: its class count and train-split size size the model and schedule."""
  return build.setup(config, source.num_classes, source.num_examples(config.data.train_split))


def initial_state(config, s: build.Setup, ckpt: "checkpoint.Checkpointer", workdir: str
                  ) -> tuple[TrainState, int]:
  """Phase 4: resume from the workdir if it has a checkpoint, else init (and load pretrained weights)."""
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(abstract_state=s.abstract_state)
    logging.info("resumed from step %d", int(state.step))
    return state, int(extra.get("data_position", int(state.step)))
  init = build.init_fn(s.model, s.tx, config.data.image_size, config.seed)
  with parallel.activate(s.mesh, s.rules):
    state = jax.jit(lambda: init(boxed=False), out_shardings=s.state_shardings)()
  if config.init_from:
    host_params = jax.device_get(state.params)
    params, report = checkpoint.load_pretrained(
        host_params, config.init_from,
        has_class_token=getattr(s.model, "classifier", None) == "token",
        keep_pre_logits=getattr(s.model, "representation_size", None) is not None)
    print(report.format(list_loaded=False))
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "init_report.txt"), "w") as f:
        f.write(report.format() + "\n")
    params = jax.device_put(params, s.state_shardings.params)
    opt_state = jax.jit(s.tx.init, out_shardings=s.state_shardings.opt_state)(params)
    model_state, lines = checkpoint.load_pretrained_model_state(
        jax.device_get(state.model_state), config.init_from)
    for line in lines:
      print(line)
    model_state = jax.device_put(model_state, s.state_shardings.model_state)
    state = state.replace(params=params, opt_state=opt_state, model_state=model_state)
  return state, 0


def evaluate(config, s: build.Setup, state: TrainState, source: sources.Source, split: str
             ) -> dict[str, float]:
  """Top-1 accuracy and mean loss over every example of a split (padded batches, masked); for
  multi-label data also precision@1 and mean average precision."""
  multi_label = getattr(source, "multi_label", False)
  eval_step = jax.jit(make_eval_step(s.model, multi_label))
  predict = jax.jit(lambda variables, images: s.model.apply(variables, images, train=False))
  ranking = eval_metrics.Metrics()
  totals = {"correct": 0.0, "loss_sum": 0.0, "count": 0.0}
  batches = pipeline.eval_batches(
      config.data, source=source, split=split, batch_size=config.eval_batch_size,
      image_size=config.data.image_size, process_index=jax.process_index(),
      process_count=jax.process_count())
  with parallel.activate(s.mesh, s.rules):
    for local in batches:
      variables = {"params": state.params, **state.model_state}
      batch = parallel.global_batch(local, s.mesh, s.rules)
      sums = eval_step(variables, batch)
      for key, value in jax.device_get(sums).items():
        totals[key] += float(value)
      if multi_label:  # ranking metrics need every score: gather them on the host
        gathered = multihost_utils.process_allgather(
            {"logits": predict(variables, batch["image"]), "label": batch["label"],
             "mask": batch["mask"]}, tiled=True)
        ranking.update(gathered["logits"], gathered["label"], gathered["mask"])
  count = max(totals["count"], 1.0)
  result = {"accuracy": totals["correct"] / count, "loss": totals["loss_sum"] / count,
            "examples": totals["count"]}
  if multi_label:
    ranked = ranking.result()
    result.update(precision_at_1=ranked["precision_at_1"],
                  mean_average_precision=ranked["mean_average_precision"])
  return result


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming if the workdir has a checkpoint), evaluates on the test split, returns final metrics."""
  source = sources.get_source(config.data)
  s = setup(config, source)
  is_main = jax.process_index() == 0
  log = MetricLog(workdir, enabled=is_main)
  ckpt = checkpoint.Checkpointer(
      os.path.join(workdir, "checkpoints"), save_every=config.train.checkpoint_every,
      keep=config.train.keep_checkpoints)
  state, position = initial_state(config, s, ckpt, workdir)
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(s.abstract_state.params))
  print(f"{config.model_name}: {n_params:,} parameters; mesh {dict(s.mesh.shape)} ({config.sharding}); "
        f"{s.total_steps} steps of batch {config.batch_size}")

  train_step = build.jit_train_step(
      s, label_smoothing=config.train.label_smoothing, accum_steps=config.train.accum_steps,
      multi_label=getattr(source, "multi_label", False))
  if config.data.get("global_order", False):
    parallel.check_process_rows(parallel.batch_sharding(s.mesh, s.rules, 1), config.batch_size)
  batches = pipeline.train_batches(
      config.data, source=source, batch_size=config.batch_size, image_size=config.data.image_size,
      seed=config.seed, start_step=position, process_index=jax.process_index(),
      process_count=jax.process_count(), augment=config.data.augment)

  # MFU: analytic training FLOPs per image over the peak of all devices at the compute dtype.
  train_flops = flops.train_flops_per_example(s.model)
  peak = flops.peak_flops_per_device(jnp.dtype(s.model.dtype).name) * s.mesh.devices.size

  step = int(jax.device_get(state.step))
  progress = tqdm.tqdm(total=s.total_steps, initial=step, disable=not is_main, unit="step",
                       dynamic_ncols=True)
  window_start, window_steps = time.perf_counter(), 0
  with _Preemption() as preemption, parallel.activate(s.mesh, s.rules):
    while step < s.total_steps:
      batch = parallel.global_batch(next(batches), s.mesh, s.rules)
      state, metrics = train_step(state, batch)
      step += 1
      window_steps += 1
      progress.update(1)
      if step % config.train.log_every == 0 or step == s.total_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not np.isfinite(metrics["loss"]):
          raise FloatingPointError(
              f"loss is {metrics['loss']} at step {step}; lower optim.learning_rate or enable "
              "optim.grad_clip_norm, and resume from the last checkpoint")
        elapsed = time.perf_counter() - window_start
        metrics["images_per_sec"] = window_steps * config.batch_size / max(elapsed, 1e-9)
        metrics["mfu"] = metrics["images_per_sec"] * train_flops / peak
        metrics["skipped_examples"] = float(getattr(batches, "skipped", 0))
        log.write(step, metrics)
        progress.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}")
        window_start, window_steps = time.perf_counter(), 0
      if config.train.eval_every and step % config.train.eval_every == 0 and step < s.total_steps:
        result = evaluate(config, s, state, source, config.data.test_split)
        log.write(step, {f"test_{k}": v for k, v in result.items()})
      # The manager saves every checkpoint_every steps; the last step and a preemption always save.
      preempted = preemption.reached(step)
      ckpt.save(step, state, {"data_position": step}, force=step == s.total_steps or preempted)
      if preempted:
        ckpt.wait_until_finished()
        progress.close()
        raise SystemExit(f"preempted (SIGTERM): saved step {step}; rerun the same command to resume")
  progress.close()
  ckpt.wait_until_finished()
  result = evaluate(config, s, state, source, config.data.test_split)
  log.write(step, {f"test_{k}": v for k, v in result.items()})
  log.close()
  ckpt.close()
  return {"step": step, **{f"test_{k}": v for k, v in result.items()}}
