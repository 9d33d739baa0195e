"""Token labeling on the digits: accuracy against plain training, step-time overhead, size of the maps.

  python experiments/token_labeling.py --teacher=workdir/teacher/finetune [--teacher_classifier=gap]
      [--seeds=0,1,2] [--output=/tmp/token_labeling] [--steps=20] [--repeats=8]
      [--parts=maps,step_time,accuracy]

The teacher is a trained model of configs/default.py:finetune (ViT-tiny/4 at 32 px) with the given
classifier: 'gap' (README, "Token labeling") or 'token' (`make run`'s workdir/default/finetune).
1. Maps: annotates the digits train split with it (python -m vit_jax.token_labels, top-5 on its 8x8
   token grid) and reports the bytes per 1,000 images and the images per second (wall, the whole
   command, start-up and compilation included), and separately the writing alone; and how often
   the maps' class (pooled over the grid, and per cell) is the image's label.
2. Step time: the trainer's step fed by its pipeline for configs/lvvit.py:digits (plain) and
   :digits_token_label (maps joined, MixToken, dense targets and loss), in `repeats` pairs of
   back-to-back runs of `steps` steps, order alternating; the median of the per-pair ratios
   (target: at most 1.10).
3. Accuracy: both configs trained by `python -m vit_jax.main` for each seed, same budget; the test
   accuracy at every evaluation and at the end.
The figures go to experiments/README.md.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax import parallel  # noqa: E402
from vit_jax.config_cli import load_config_file  # noqa: E402
from vit_jax.data import pipeline, score_maps, sources  # noqa: E402
from vit_jax.train import loop  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = ("digits", "digits_token_label")


def lvvit_config(variant: str, maps: str, seed: int = 0):
  config = load_config_file(f"{ROOT}/configs/lvvit.py:{variant}")
  config.unlock()
  config.seed = seed
  if config.data.score_maps:
    config.data.score_maps = maps
  return config.lock()


def annotate(teacher: str, classifier: str, maps: str) -> None:
  """Writes the maps with the command users run; prints their size, the speed and their accuracy."""
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "vit_jax.token_labels", f"--teacher={teacher}",
                  f"--config={ROOT}/configs/default.py:finetune", f"--output={maps}",
                  f"--config.model.classifier={classifier}"], check=True, cwd=ROOT)
  seconds = time.perf_counter() - start
  manifest = score_maps.read_manifest(maps)
  size = sum(path.stat().st_size for path in pathlib.Path(maps).glob("shard-*.npz"))
  loaded = score_maps.load(maps)
  rewrite = tempfile.mkdtemp()
  start = time.perf_counter()
  score_maps.start(rewrite, manifest)
  keys = list(loaded.rows)
  for shard, rows in enumerate(np.array_split(np.arange(len(keys)), manifest.shards)):
    score_maps.write_shard(rewrite, manifest, shard, [keys[i] for i in rows], loaded.values[rows],
                           loaded.indices[rows])
  writing = time.perf_counter() - start
  per_thousand = 1000 / manifest.examples
  print(f"maps: {manifest.examples} images, top-{manifest.top_k} on {manifest.grid}, "
        f"{manifest.value_dtype} values: {size * per_thousand / 1e6:.2f} MB per 1,000 images; "
        f"annotator command {manifest.examples / seconds:.0f} images/s ({seconds:.1f} s, start-up "
        f"and compilation included); writing alone {manifest.examples / writing:,.0f} images/s")
  source = sources.get_source(lvvit_config("digits", maps).data)
  labels = {example["key"].decode(): example["label"]
            for example in source.read(manifest.split).as_numpy_iterator()}
  truth = np.array([labels[key] for key in keys])
  logits = np.zeros((len(keys), manifest.num_classes, *manifest.grid), np.float32)
  np.put_along_axis(logits, loaded.indices.astype(np.int64), loaded.values.astype(np.float32), 1)
  per_cell = np.mean(logits.argmax(1) == truth[:, None, None])
  print(f"  the maps' top class is the label: {np.mean(logits.mean((2, 3)).argmax(1) == truth):.3f} "
        f"of images (logits averaged over the grid), {per_cell:.3f} of cells")


def step_time_ratio(maps: str, steps: int, repeats: int):
  """Median step times of both variants, fed by their pipelines, and the median per-pair ratio."""
  runs = {}
  for variant in VARIANTS:
    config = lvvit_config(variant, maps)
    source = sources.get_source(config.data)
    s = loop.setup(config, source)
    batches = pipeline.train_batches(config.data, source=source, batch_size=config.batch_size,
                                     image_size=config.data.image_size, seed=config.seed)
    runs[variant] = [s, batches, s.init_state()]
  times = {variant: [] for variant in VARIANTS}

  def run(variant, n):
    s, batches, state = runs[variant]
    with parallel.activate(s.mesh, s.rules):
      jax.block_until_ready(state)
      start = time.perf_counter()
      for _ in range(n):  # As the trainer's loop: the next batch while the last step runs.
        state, metrics = s.train_step(state, parallel.global_batch(next(batches), s.mesh, s.rules))
      jax.block_until_ready(metrics)
    runs[variant][2] = state
    return (time.perf_counter() - start) / n

  for variant in VARIANTS:
    run(variant, 2)  # compile
  for repeat in range(repeats):
    for variant in (VARIANTS, VARIANTS[::-1])[repeat % 2]:
      times[variant].append(run(variant, steps))
  plain, labeled = (np.array(times[v]) for v in VARIANTS)
  print(f"step time, LV-ViT-test at 32 px, batch 128, {jax.device_count()} device: plain "
        f"{1e3 * np.median(plain):.1f} ms, token labeling {1e3 * np.median(labeled):.1f} ms: ratio "
        f"{np.median(labeled / plain):.3f} (median of {repeats} pairs of {steps} steps)")
  print("  runs (ms): " + "; ".join(f"{v} " + "/".join(f"{1e3 * t:.1f}" for t in times[v])
                                   for v in VARIANTS))


def accuracy(maps: str, seeds, output: str) -> None:
  """Trains both variants for every seed; prints the test accuracy curves and the finals."""
  finals = {variant: [] for variant in VARIANTS}
  for variant in VARIANTS:
    for seed in seeds:
      workdir = os.path.join(output, f"{variant}_seed{seed}")
      flags = [f"--config={ROOT}/configs/lvvit.py:{variant}", f"--workdir={workdir}",
               f"--config.seed={seed}"]
      if variant.endswith("token_label"):
        flags.append(f"--config.data.score_maps={maps}")
      subprocess.run([sys.executable, "-m", "vit_jax.main", *flags], check=True, cwd=ROOT,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        curve = [(row["step"], row["test_accuracy"]) for row in map(json.loads, f)
                 if "test_accuracy" in row]
      finals[variant].append(curve[-1][1])
      print(f"{variant} seed {seed}: " + " ".join(f"{step}:{acc:.3f}" for step, acc in curve))
  for variant in VARIANTS:
    print(f"{variant}: final test accuracy {' '.join(f'{a:.3f}' for a in finals[variant])} "
          f"(mean {np.mean(finals[variant]):.4f})")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--teacher", default=str(ROOT / "workdir/teacher/finetune"))
  parser.add_argument("--teacher_classifier", default="gap")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--output", default=os.path.join(tempfile.gettempdir(), "token_labeling"))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=8)
  parser.add_argument("--parts", default="maps,step_time,accuracy",
                      help="which figures: maps (always rewritten first), step_time, accuracy")
  args = parser.parse_args()
  parts = args.parts.split(",")
  maps = os.path.join(args.output, "score_maps")
  if "maps" in parts:
    shutil.rmtree(args.output, ignore_errors=True)  # every figure from this run
    annotate(args.teacher, args.teacher_classifier, maps)
  if "step_time" in parts:
    step_time_ratio(maps, args.steps, args.repeats)
  if "accuracy" in parts:
    accuracy(maps, [int(s) for s in args.seeds.split(",")], args.output)


if __name__ == "__main__":
  main()
