"""Step time and peak resident memory per glibc malloc setting: what keeping freed pages buys and costs.

  python experiments/bench_host_memory.py [--settings=off,kept,...] [--rounds=2] [--cases=jpeg,synthetic]

mallopt must be set before any thread starts, so every (setting, case) is a child process of this
one; the settings take turns within each round (rotated order), and each speedup is the median over
rounds of that round's (off / setting) step-time ratio. Cases: `jpeg` is ViT-Ti/16 f32 at batch 32
fed by the real tf.data pretraining pipeline from synthetic JPEG shards (bench_input's photos and
pipeline), `synthetic` is bench_train's ViT-B/16 f32 AdamW step at batch 8 on one in-memory batch.
Peak resident memory is the child's VmHWM (/proc/self/status) after its steps: it includes
compilation and the pipeline, as a training run's would. The figures go to experiments/README.md.
"""
import argparse
import ctypes
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -3, -4, -8
# setting -> (mallopt calls, malloc_trim(0) after this many steps, or every -n steps, or 0). "default" is whatever
# vit_jax.host_memory.keep_freed_pages() does now.
SETTINGS = {
    "off": ((), 0),
    "kept": (((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)), 0),
    "kept+trim3": (((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)), 3),
    "kept+trim_every4": (((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)), -4),
    "kept_trim256m": (((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 256 * 2**20)), 0),
    "thread_arenas": (((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)), 0),
    "threshold2g": (((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 2**31 - 1), (M_TRIM_THRESHOLD, 2**31 - 1)), 0),
    "default": (None, 0),
}


def _status_kib(field):
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1])
  raise KeyError(field)


def child(setting, case, steps, jpeg_dir):
  """Applies the setting, runs `steps` steps after one warm-up, prints a JSON line."""
  calls, trim_after = SETTINGS[setting]
  libc = ctypes.CDLL(None)
  if calls is None:
    from vit_jax import host_memory  # pylint: disable=g-import-not-at-top
    kept = host_memory.keep_freed_pages()
    assert kept.applied, kept.reason
  else:
    for parameter, value in calls:
      assert libc.mallopt(parameter, value) == 1, (parameter, value)
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(HERE))
  from vit_jax import parallel  # pylint: disable=g-import-not-at-top
  if case == "jpeg":
    import bench_input  # pylint: disable=g-import-not-at-top
    from vit_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
    from vit_jax.train import loop  # pylint: disable=g-import-not-at-top
    config = bench_input.load_default_config()
    config.model_name = "ViT-Ti/16"
    config.data.update(source="jft", root=jpeg_dir, image_size=224, pp_train=bench_input.PRETRAIN_PP,
                       pp_batch="")
    config.batch_size = 32
    source = sources.get_source(config.data)
    s = loop.setup(config, source)
    batches = pipeline.train_batches(config.data, source=source, batch_size=config.batch_size,
                                     image_size=224, seed=0, augment=config.data.augment)
    holder = {"state": s.init_state()}

    def one_step():
      with parallel.activate(s.mesh, s.rules):
        holder["state"], metrics = s.train_step(
            holder["state"], parallel.global_batch(next(batches), s.mesh, s.rules))
      jax.block_until_ready(metrics)
  else:
    import bench_train  # pylint: disable=g-import-not-at-top
    _, time_steps, _ = bench_train.ours("ViT-B/16", 8, "float32", "xla", "none", warmup=1)

    def one_step():
      time_steps(1)
  one_step()  # compile
  times, faults = [], []
  for i in range(steps):
    if (trim_after > 0 and i == trim_after) or (trim_after < 0 and i and i % -trim_after == 0):
      libc.malloc_trim(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    one_step()
    times.append(time.perf_counter() - start)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  print(json.dumps({"times": times, "faults": faults, "peak_gb": _status_kib("VmHWM") * 1024 / 1e9,
                    "end_gb": _status_kib("VmRSS") * 1024 / 1e9}), flush=True)


def run_child(setting, case, steps, jpeg_dir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("VIT_JAX_KEEP_FREED_PAGES", None)
  done = subprocess.run([sys.executable, __file__, "--child", setting, "--cases", case,
                         "--steps", str(steps), "--jpeg_dir", jpeg_dir],
                        capture_output=True, text=True, env=env, check=False)
  if done.returncode:
    raise RuntimeError(f"{setting}/{case} failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def median(values):
  values = sorted(values)
  n = len(values)
  return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--settings", default="off,kept,default")
  parser.add_argument("--cases", default="jpeg,synthetic")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=0, help="timed steps per child (0: 10 jpeg, 5 synthetic)")
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--child", default="")
  parser.add_argument("--jpeg_dir", default="")
  args = parser.parse_args()
  if args.child:
    child(args.child, args.cases, args.steps, args.jpeg_dir)
    return
  settings, cases = args.settings.split(","), args.cases.split(",")
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    parser.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; settings {settings}, "
        f"{args.rounds} rounds", flush=True)
  results = {(s, c): [] for s in settings for c in cases}
  with tempfile.TemporaryDirectory() as tmp:
    if "jpeg" in cases:
      sys.path.insert(0, str(HERE))
      os.environ["VIT_JAX_KEEP_FREED_PAGES"] = "0"  # bench_input is imported, not run: no mallopt
      import bench_input  # pylint: disable=g-import-not-at-top
      from vit_jax.data import jft  # pylint: disable=g-import-not-at-top
      jft.write_split(tmp, "train", bench_input.synthetic_jpegs(args.images), num_classes=1000,
                      num_shards=8)
    for r in range(args.rounds):
      order = settings[r % len(settings):] + settings[:r % len(settings)]
      for case in cases:
        steps = args.steps or {"jpeg": 10, "synthetic": 5}[case]
        for setting in order:
          load = os.getloadavg()[0]
          out = run_child(setting, case, steps, tmp)
          out["load"] = load
          results[(setting, case)].append(out)
          print(f"round {r + 1} {case:9s} {setting:13s} load {load:.2f}: median step "
                f"{median(out['times']):.3f} s, faults/step {median(out['faults']):.0f}, peak "
                f"{out['peak_gb']:.2f} GB, end {out['end_gb']:.2f} GB; steps "
                + " ".join(f"{t:.2f}" for t in out["times"]), flush=True)
  print("\n| case | setting | median step s | speedup vs off (per-round median) | faults/step "
        "| peak RSS GB | end RSS GB | load |")
  print("|---|---|---|---|---|---|---|---|")
  for case in cases:
    for setting in settings:
      runs = results[(setting, case)]
      step = median([median(o["times"]) for o in runs])
      speedup = ""
      if "off" in settings:
        speedup = f"{median([median(b['times']) / median(o['times']) for o, b in zip(runs, results[('off', case)])]):.3f}"
      print(f"| {case} | {setting} | {step:.3f} | {speedup} | "
            f"{median([median(o['faults']) for o in runs]):.0f} | "
            f"{max(o['peak_gb'] for o in runs):.2f} | {max(o['end_gb'] for o in runs):.2f} | "
            f"{min(o['load'] for o in runs):.1f}-{max(o['load'] for o in runs):.1f} |")


if __name__ == "__main__":
  main()
