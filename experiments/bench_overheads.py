"""What the trainer spends around its step, each overhead as a ratio (or a time) from one run.

  python experiments/bench_overheads.py checkpoint [--model=ViT-S/16 --batch=8 --rounds=6]
  python experiments/bench_overheads.py logging [--steps=20 --log_every=10 --trace_dir=/tmp/trace]
  python experiments/bench_overheads.py eval [--rounds=12 --passes=3]
  python experiments/bench_overheads.py eval --model=ViT-S/16 --split=test --rounds=3 --passes=1
  python experiments/bench_overheads.py compile [--models=ViT-B/16,ViT-L/16,ViT-H/14]

checkpoint: the real train step and the real Checkpointer (async Orbax saves, preceded by the loop's
  finiteness check, as loop._train does). Each round saves once, then steps until the save is
  committed and as many steps again; each step is timed to its completion. The ratio is the mean
  step overlapping the background write over the mean step away from it, the median over rounds;
  the time the save call holds the training thread (finiteness, checksums, device-to-host copy) is
  reported beside it, in steps.
logging: the default job (configs/default.py:pretrain) through the trainer's own loop (loop._train),
  with a jax.profiler trace; the train step is wrapped to note when each dispatch returns, a watcher
  thread notes when each step completes (the loop itself never waits for it), and jax.device_get is
  counted per step. Reports how many steps dispatch runs ahead, the host time between dispatches and
  the steps on which the loop read the device.
eval: the default job's eval step over a split (its classification evaluator as the trainer runs
  it; its pass, eval_pass.run, from a new pipeline each pass and from batches held in memory),
  against a forward pass of the same model on train-sized batches in the train step's shardings;
  per real example, alternating, the median of per-round ratios; with --model, that model on the digits resized to --image_size
  (pipeline work and compute per image at a real resolution). Also counts the eval step's
  compilations over a short run with three eval passes on raw and EMA weights.
compile: time to the first step, i.e. lowering + compiling the trainer's train step (build.setup, as
  vit_jax.plan does, abstract inputs) per model, scanned and unrolled, 224 px.
The figures go to experiments/README.md "## Overheads around the step".
"""
import argparse
import contextlib
import dataclasses
import glob
import gzip
import importlib.util
import json
import os
import pathlib
import queue
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vit_jax import host_memory  # noqa: E402

# As `python -m vit_jax.main` does, before jax starts a thread (VIT_JAX_KEEP_FREED_PAGES=0: off).
KEPT_PAGES = host_memory.keep_freed_pages() if __name__ == "__main__" else None

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax import checkpoint, parallel  # noqa: E402
from vit_jax.checkpoint import writer_priority  # noqa: E402
from vit_jax.configuration import base_config  # noqa: E402
from vit_jax.data import sources  # noqa: E402
from vit_jax.train import build, eval_pass, evaluators, loop, metric_rows  # noqa: E402
from vit_jax.train.metric_log import MetricLog  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_default_config(stage: str = "pretrain"):
  spec = importlib.util.spec_from_file_location("default_config", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(stage)


def model_config(model: str, batch: int, scan: bool = False):
  """A 224-px, 1000-class AdamW config of `model` (the pretraining recipes' optimizer)."""
  config = base_config(model)
  config.data.image_size = 224
  config.batch_size = batch
  config.train.steps = 1000
  config.optim.name = "adamw"
  config.optim.warmup_steps = 10
  config.model.scan_layers = scan
  return config


def synthetic_batch(s: build.Setup, batch: int, with_mask: bool = False) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  local = {"image": rng.uniform(-1, 1, (batch, s.image_size, s.image_size, 3)).astype(np.float32),
           "label": rng.randint(0, s.num_classes, batch).astype(np.int32)}
  if with_mask:
    local["mask"] = np.ones(batch, np.float32)
  return local


def load_line() -> str:
  return f"load average {os.getloadavg()[0]:.2f}"


# --- checkpoint -------------------------------------------------------------------------------------

def checkpoint_overhead(args) -> None:
  config = model_config(args.model, args.batch)
  s = build.setup(config, num_classes=1000, train_examples=10 ** 6)
  state = s.init_state()
  n_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  with parallel.activate(s.mesh, s.rules):
    batch = parallel.global_batch(synthetic_batch(s, args.batch), s.mesh, s.rules)

  def timed_step(state):
    """One step, timed to its completion: the only place this benchmark waits for the device."""
    start = time.perf_counter()
    state, metrics = s.train_step(state, batch)
    jax.block_until_ready(metrics)
    return state, time.perf_counter() - start

  with tempfile.TemporaryDirectory(dir=args.dir) as tmp, parallel.activate(s.mesh, s.rules), \
      checkpoint.Checkpointer(os.path.join(tmp, "checkpoints"), save_every=1, keep=2) as ckpt:
    for _ in range(args.warmup):
      state, _ = timed_step(state)
    # A first save compiles the finiteness check and the fingerprints: not measured.
    ckpt.save(0, state, {"data_position": 0}, force=True)
    loop.check_before_save(state, 0, ckpt)
    ckpt.wait_until_finished()
    print(f"{args.model}, batch {args.batch}, {n_bytes / 2**20:.0f} MiB of train state; "
          f"{jax.devices()[0].device_kind}; writes yield to the step (idle priority): "
          f"{writer_priority.writes_yield_to_step()}; {load_line()}", flush=True)
    ratios, blocking, during_all, away_all = [], [], [], []
    step = 0
    for r in range(args.rounds):
      state, _ = timed_step(state)  # The step the loop saves after.
      step += 1
      start = time.perf_counter()
      loop.check_before_save(state, step, ckpt)  # As loop._train, on the training thread.
      ckpt.save(step, state, {"data_position": step}, force=True)
      held = time.perf_counter() - start
      during = []
      while ckpt._manager.is_saving_in_progress():  # pylint: disable=protected-access
        state, seconds = timed_step(state)
        step += 1
        during.append(seconds)
      ckpt.wait_until_finished()  # Committed: raises here if the save failed.
      written = time.perf_counter() - start
      away = []
      for _ in range(max(len(during), args.min_away)):
        state, seconds = timed_step(state)
        step += 1
        away.append(seconds)
      ratio = np.mean(during) / np.mean(away) if during else float("nan")
      ratios.append(ratio)
      blocking.append(held / np.mean(away))
      during_all += during
      away_all += away
      print(f"round {r + 1}: save call held the loop {held:.2f} s ({held / np.mean(away):.2f} "
            f"steps), committed after {written:.2f} s; {len(during)} steps during the write "
            f"{1e3 * np.mean(during) if during else 0:.0f} ms, {len(away)} away "
            f"{1e3 * np.mean(away):.0f} ms: ratio {ratio:.3f}; {load_line()}", flush=True)
  print(f"steps during the write / steps away: {np.nanmedian(ratios):.3f} (median of "
        f"{len(ratios)} rounds; pooled means {1e3 * np.mean(during_all):.0f} / "
        f"{1e3 * np.mean(away_all):.0f} ms); the save call holds the loop "
        f"{np.median(blocking):.2f} steps (median)")


# --- logging ----------------------------------------------------------------------------------------

class StepWatch:
  """Notes when each train step's dispatch returns and, from a watcher thread, when it completes."""

  def __init__(self, step_fn):
    self._step_fn = step_fn
    self.dispatched, self.completed, self.reads = [], {}, []
    self._pending = queue.Queue()
    self._thread = threading.Thread(target=self._watch, daemon=True)
    self._thread.start()

  def __call__(self, state, batch):
    started = time.perf_counter()
    state, metrics = self._step_fn(state, batch)
    index = len(self.dispatched)
    self.dispatched.append((started, time.perf_counter()))
    self._pending.put((index, metrics))
    return state, metrics

  def _watch(self):
    while True:
      index, metrics = self._pending.get()
      if index is None:
        return
      jax.block_until_ready(metrics)
      self.completed[index] = time.perf_counter()

  def close(self):
    self._pending.put((None, None))
    self._thread.join()


def logging_overhead(args) -> None:
  config = load_default_config()
  config.train.steps = args.steps + args.warmup
  config.train.epochs = 0.0
  config.optim.warmup_steps = 2
  config.train.log_every = args.log_every
  config.train.checkpoint_every = 10 ** 6  # Only the final, forced save.
  config.evals.test.every = 0
  source = sources.get_source(config.data)
  s = loop.setup(config, source)
  watch = StepWatch(s.train_step)
  s = dataclasses.replace(s, train_step=watch)
  device_get = jax.device_get

  def counted_device_get(tree):
    watch.reads.append(len(watch.dispatched))  # Steps dispatched when the read was made.
    return device_get(tree)

  with tempfile.TemporaryDirectory() as workdir:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=10 ** 6)
    log = MetricLog(workdir)
    state = s.init_state()
    jax.block_until_ready(state)
    print(f"default job, {config.train.steps} steps, log_every {args.log_every}; {load_line()}",
          flush=True)
    jax.device_get = counted_device_get
    try:
      options = jax.profiler.ProfileOptions()
      options.python_tracer_level = 0  # Python calls would bury the steps (tf.data's autograph).
      trace = jax.profiler.trace(args.trace_dir, create_perfetto_trace=True,
                                 profiler_options=options) if args.trace_dir else None
      with ckpt, trace or contextlib.nullcontext():
        loop._train(config, s, source, ckpt, log, state, 0)  # pylint: disable=protected-access
    finally:
      jax.device_get = device_get
      log.close()
      watch.close()
  starts = np.array([d[0] for d in watch.dispatched])
  returns = np.array([d[1] for d in watch.dispatched])
  done = np.array([watch.completed[i] for i in range(len(starts))])
  steady = slice(args.warmup, len(starts) - 1)  # After compilation; the last step waits for the end.
  ahead = [int(np.sum((returns[:i] <= returns[i]) & (done[:i] > returns[i]))) for i in range(len(starts))]
  gaps = starts[1:] - returns[:-1]  # Host time between one dispatch returning and the next starting.
  compute = np.diff(done)
  reads = sorted(set(watch.reads))
  print(f"steps {args.warmup + 1}-{len(starts) - 1}: dispatch returns "
        f"{1e3 * np.median((returns - starts)[steady]):.2f} ms after it starts; when step k is "
        f"dispatched, {np.median(np.array(ahead)[steady]):.0f} earlier steps are still running "
        f"(median; min {min(ahead[steady])}, max {max(ahead[steady])}); step k completes "
        f"{1e3 * np.median((done - returns)[steady]):.0f} ms after its dispatch returned")
  print(f"host gap between dispatches: median {1e3 * np.median(gaps[steady]):.1f} ms "
        f"(max {1e3 * np.max(gaps[steady]):.1f} ms) against a step of "
        f"{1e3 * np.median(compute[steady]):.1f} ms (completion to completion)")
  print(f"jax.device_get calls made after dispatching step: {watch.reads} "
        f"(logging steps are multiples of {args.log_every}; distinct: {reads})")
  slow = [i + 1 for i in range(1, len(gaps)) if gaps[i] > 0.5 * np.median(compute[steady])]
  print(f"steps after which the loop's host time exceeded half a step: {slow}")
  if args.trace_dir:
    rows = profile_reads(args.trace_dir)
    print(f"profile written under {args.trace_dir} (TensorBoard's profile plugin or Perfetto); in it, "
          f"dispatch of steps {args.warmup + 1}-{len(rows)} takes median "
          f"{np.median([ms for _, ms, _ in rows[args.warmup:]]):.1f} ms on the Python thread, and "
          "device reads (np.asarray / copy_to_host_async / buffer awaits) follow steps "
          f"{ {step: n for step, _, n in rows if n} }")
  print(load_line())


HOST_READS = ("np.asarray(jax.Array)", "ArrayImpl.copy_to_host_async", "CommonPjRtBuffer::Await")


def profile_reads(trace_dir: str) -> list[tuple[int, float, int]]:
  """From the profile's trace: per train step, (step, its dispatch in ms, device reads on the
  Python thread between its dispatch and the next one)."""
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz")))[-1]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  python = {(e["pid"], e["tid"]) for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name" and e["args"]["name"] == "python"}
  host = sorted((e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) in python),
                key=lambda e: e["ts"])
  steps = []
  for e in host:  # The outermost dispatch of each step.
    if e["name"] == "PjitFunction(train_step)" and (
        not steps or e["ts"] >= steps[-1]["ts"] + steps[-1]["dur"]):
      steps.append(e)
  ends = [e["ts"] for e in steps[1:]] + [float("inf")]
  return [(i + 1, e["dur"] / 1e3,
           sum(1 for x in host if e["ts"] <= x["ts"] < end and x["name"] in HOST_READS))
          for i, (e, end) in enumerate(zip(steps, ends))]


# --- eval -------------------------------------------------------------------------------------------

def count_eval_compiles() -> tuple[int, int, int]:
  """(eval step compilations, train step compilations, eval passes) over a short default-job run."""
  config = load_default_config()
  config.train.steps, config.train.epochs = 6, 0.0
  config.optim.warmup_steps = 2
  config.train.log_every, config.train.checkpoint_every = 3, 6
  config.evals.test.every = 2
  config.optim.ema_decay = 0.5
  compiles = {"eval_step": 0, "train_step": 0}

  def listener(event, duration, fun_name="", **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      for name in compiles:
        compiles[name] += name in fun_name

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    with tempfile.TemporaryDirectory() as workdir:
      loop.train_and_evaluate(config, workdir)
      passes = sum(1 for row in metric_rows.read(os.path.join(workdir, metric_rows.FILE))
                   if "test_accuracy" in row)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return compiles["eval_step"], compiles["train_step"], 2 * passes  # raw and EMA weights


def eval_config(args):
  """The default job, or with --model its digits at --image_size through that model (images
  resized up: per-image pipeline work and compute at a real resolution)."""
  config = load_default_config()
  if not args.model:
    return config
  sized = base_config(args.model)
  sized.data = config.data
  sized.data.image_size = args.image_size
  sized.data.pp_batch = f"inception_crop({args.image_size})|value_range(-1, 1)"
  sized.batch_size, sized.eval_batch_size = args.batch, args.eval_batch
  sized.train.steps = 1000
  return sized


def eval_overhead(args) -> None:
  evals, trains, passes = count_eval_compiles()
  print(f"short run, {passes} eval passes (3 evaluations x raw and EMA weights): eval_step compiled "
        f"{evals} time(s), train_step {trains}", flush=True)
  config = eval_config(args)
  source = sources.get_source(config.data)
  s = loop.setup(config, source)
  split = args.split or config.data.train_split  # The default job's test split is 359 examples.

  def eval_batches():  # One pass as the evaluators make it, without their pass cache.
    return evaluators.split_batches(s, source, config.data, split, config.eval_batch_size)

  in_memory = list(eval_batches())
  examples = sum(int(b["mask"].sum()) for b in in_memory)
  padded = sum(len(b["mask"]) for b in in_memory)
  state = s.init_state()
  variables = {"params": state.params, **state.model_state}
  # The train step's layout: its parameter shardings, batches sharded as the trainer shards them.
  layout = ({"params": s.state_shardings.params, **s.state_shardings.model_state},
            {"image": parallel.batch_sharding(s.mesh, s.rules, 4),
             "label": parallel.batch_sharding(s.mesh, s.rules, 1)})
  forward = jax.jit(lambda variables, batch: s.model.apply(variables, batch["image"], train=False),
                    in_shardings=layout)
  with parallel.activate(s.mesh, s.rules):
    train_batch = parallel.global_batch(synthetic_batch(s, s.batch_size), s.mesh, s.rules)
  forward_batches = max(1, round(padded / s.batch_size))

  def timed_passes(make_batches):
    start = time.perf_counter()
    for _ in range(args.passes):
      eval_pass.run(s.eval_step, variables, make_batches(), s.mesh, s.rules)
    return (time.perf_counter() - start) / (args.passes * examples)

  def forward_passes(from_host: bool):
    start = time.perf_counter()
    with parallel.activate(s.mesh, s.rules):
      for _ in range(args.passes * forward_batches):
        batch = parallel.global_batch(host_batch, s.mesh, s.rules) if from_host else train_batch
        logits = forward(variables, batch)
      jax.block_until_ready(logits)
    return (time.perf_counter() - start) / (args.passes * forward_batches * s.batch_size)

  # What the trainer runs: the evaluator, its passes after the first from host memory (pass_cache).
  evaluator = evaluators.EVALUATORS.get("classification")(s, source, config.data, split,
                                                         config.eval_batch_size)

  def evaluator_passes():
    start = time.perf_counter()
    for _ in range(args.passes):
      evaluator(variables)
    return (time.perf_counter() - start) / (args.passes * examples)

  host_batch = synthetic_batch(s, s.batch_size)
  variants = {"evaluator": evaluator_passes,
              "eval, pipeline": lambda: timed_passes(eval_batches),
              "eval, in memory": lambda: timed_passes(lambda: in_memory),
              "forward": lambda: forward_passes(from_host=False),
              "forward, batches from host": lambda: forward_passes(from_host=True)}
  for fn in variants.values():  # Compile, and fill the pipeline's caches.
    fn()
  print(f"{config.model_name} at {s.image_size} px: eval passes over {split} ({examples} examples in "
        f"{len(in_memory)} batches of {len(in_memory[0]['mask'])}, {padded - examples} of them "
        "padding), "
        f"by the evaluator, from the pipeline each pass and held in memory, vs {forward_batches} "
        f"forward passes of the train "
        f"batch {s.batch_size}; per real example; {load_line()}", flush=True)
  names = list(variants)
  rounds = []
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    rounds.append({name: variants[name]() for name in order})
    print(f"round {r + 1}: " + ", ".join(f"{n} {1e6 * rounds[-1][n]:.1f} us" for n in names),
          flush=True)
  for name in [n for n in names if not n.startswith("forward")]:
    for baseline in [n for n in names if n.startswith("forward")]:
      ratio = np.median([r[name] / r[baseline] for r in rounds])
      print(f"{name} / {baseline} per example: {ratio:.3f} (median of {len(rounds)} rounds)")
  print(load_line())


# --- compile ----------------------------------------------------------------------------------------

def compile_times(args) -> None:
  print(f"{jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}, batch "
        f"{args.batch} at 224 px; {load_line()}", flush=True)
  for model in args.models.split(","):
    for scan in [v == "scanned" for v in args.layers.split(",")]:
      start = time.perf_counter()
      s = build.setup(model_config(model, args.batch, scan), num_classes=1000,
                      train_examples=10 ** 6)
      built = time.perf_counter()
      with parallel.activate(s.mesh, s.rules):
        lowered = s.train_step.lower(s.abstract_state, s.abstract_batch())
        lowered_at = time.perf_counter()
        lowered.compile()
      done = time.perf_counter()
      print(f"{model} {'scanned ' if scan else 'unrolled'}: setup {built - start:5.1f} s, lower "
            f"{lowered_at - built:5.1f} s, compile {done - lowered_at:6.1f} s, to the first step "
            f"{done - start:6.1f} s; {load_line()}", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)
  ckpt = commands.add_parser("checkpoint", help="async save vs steps away from saves")
  ckpt.add_argument("--model", default="ViT-S/16")
  ckpt.add_argument("--batch", type=int, default=8)
  ckpt.add_argument("--rounds", type=int, default=6)
  ckpt.add_argument("--warmup", type=int, default=2)
  ckpt.add_argument("--min_away", type=int, default=4, help="steps away from saves per round")
  ckpt.add_argument("--dir", default=None, help="where checkpoints are written (default: $TMPDIR)")
  logs = commands.add_parser("logging", help="dispatch ahead of completion, device reads per step")
  logs.add_argument("--steps", type=int, default=20)
  logs.add_argument("--warmup", type=int, default=3, help="steps before the measured ones")
  logs.add_argument("--log_every", type=int, default=10)
  logs.add_argument("--trace_dir", default="", help="jax.profiler trace directory ('' for none)")
  ev = commands.add_parser("eval", help="compilations and eval cost per example vs a forward pass")
  ev.add_argument("--rounds", type=int, default=12)
  ev.add_argument("--passes", type=int, default=3, help="passes per variant per round")
  ev.add_argument("--split", default="", help="the split evaluated (default: data.train_split)")
  ev.add_argument("--model", default="", help="another model on the digits (default: the job's)")
  ev.add_argument("--image_size", type=int, default=224, help="with --model")
  ev.add_argument("--batch", type=int, default=32, help="with --model: the train batch")
  ev.add_argument("--eval_batch", type=int, default=64, help="with --model")
  comp = commands.add_parser("compile", help="time to the first step, scanned and unrolled")
  comp.add_argument("--models", default="ViT-B/16,ViT-L/16,ViT-H/14")
  comp.add_argument("--layers", default="scanned,unrolled")
  comp.add_argument("--batch", type=int, default=8)
  args = parser.parse_args()
  print(f"{os.cpu_count()} CPUs; keep freed host pages: {KEPT_PAGES.applied}", flush=True)
  {"checkpoint": checkpoint_overhead, "logging": logging_overhead, "eval": eval_overhead,
   "compile": compile_times}[args.command](args)


if __name__ == "__main__":
  main()
