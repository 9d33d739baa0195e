"""Noisy Student on the digits with 90% of the train labels hidden: does the student beat its teacher?

  python experiments/noisy_student.py [--output=workdir/experiments/noisy_student] [--seeds=0,1]
      [--labels=soft] [--threshold=0.3] [--per_class=130] [--baselines]

For each seed, as configs/noisy_student.py describes: the teacher (ViT-tiny/4 on the 144 labelled
images of 'train[:10%]') labels the 1294 images of 'train[10%:]' (python -m vit_jax.pseudo_labels'
function: no noise, confidence threshold, K rows per class), student 1 (the same ViT with RandAugment,
dropout and stochastic depth) trains on the labelled plus the pseudo-labelled images, labels them
again, and student 2 trains on those labels. Every model is tested on the same 359 test images, and
the pseudo-labels are scored against the hidden labels. With --baselines, also: the student config
on the labelled images only (same noise and steps: what the pseudo-labels add) and the teacher
trained as many steps as teacher + student 1 (what more steps alone give). Every run starts afresh
in its own directory under --output. The figures go to experiments/README.md.
"""
import argparse
import os
import pathlib
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF only feeds the input pipeline

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax.config_cli import load_config_file  # noqa: E402
from vit_jax.data import pseudo_label_store, sources  # noqa: E402
from vit_jax.pseudo_labels import label, summary  # noqa: E402
from vit_jax.train import loop  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_for(stage: str, seed: int, pseudo_labels: str = "", steps: int = 0):
  config = load_config_file(f"{ROOT}/configs/noisy_student.py:{stage}")
  config.unlock()
  config.seed = seed
  config.data.pseudo_labels = pseudo_labels
  if steps:
    config.train.steps = steps
  return config.lock()


def train(name: str, config, output: pathlib.Path, seconds: dict) -> float:
  """Trains afresh in output/name; returns the final test accuracy."""
  workdir = output / name
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  result = loop.train_and_evaluate(config, str(workdir))
  seconds[name] = time.perf_counter() - start
  return float(result["test_accuracy"])


def hidden_labels(config) -> dict[str, int]:
  """The true label of every example of the unlabelled split, by key (hidden from training)."""
  source = sources.get_source(config.data)
  return {ex["key"].decode(): int(ex["label"])
          for ex in source.read(config.data.unlabeled_split).as_numpy_iterator()}


def pseudo_label(name: str, teacher: pathlib.Path, config, args, output: pathlib.Path,
                 truth: dict[str, int], seconds: dict) -> tuple[str, float]:
  """Labels with `teacher` into output/name; returns the directory and the accuracy of the kept
  labels' top class against the hidden labels, counted per row (copies included)."""
  directory = output / name
  shutil.rmtree(directory, ignore_errors=True)
  start = time.perf_counter()
  done = label(config, str(teacher), str(directory), mode=args.labels, threshold=args.threshold,
               per_class=args.per_class)
  seconds[name] = time.perf_counter() - start
  print(summary(str(directory), done["counts"]))
  kept = pseudo_label_store.load(str(directory))
  right = np.array([truth[key] for key in kept.keys]) == kept.targets.argmax(axis=1)
  return str(directory), float(np.sum(right * kept.copies) / kept.copies.sum())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", default=str(ROOT / "workdir" / "experiments" / "noisy_student"))
  parser.add_argument("--seeds", default="0,1", help="seeds of whole teacher-student chains")
  parser.add_argument("--labels", default="soft", choices=("soft", "hard"))
  parser.add_argument("--threshold", type=float, default=0.3)
  parser.add_argument("--per_class", type=int, default=130)
  parser.add_argument("--baselines", action="store_true",
                      help="also the student config on the labelled images only, and the teacher "
                           "trained as long as teacher and student 1 together")
  args = parser.parse_args()
  output = pathlib.Path(args.output)
  seeds = [int(s) for s in args.seeds.split(",")]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
  truth = hidden_labels(config_for("teacher", 0))

  rows, seconds = [], {}
  for seed in seeds:
    row = {}
    teacher_config = config_for("teacher", seed)
    row["teacher"] = train(f"teacher_{seed}", teacher_config, output, seconds)
    labels_1, row["labels 1 acc"] = pseudo_label(f"labels_1_{seed}", output / f"teacher_{seed}",
                                                 teacher_config, args, output, truth, seconds)
    row["student 1"] = train(f"student_1_{seed}", config_for("student", seed, labels_1), output,
                             seconds)
    labels_2, row["labels 2 acc"] = pseudo_label(f"labels_2_{seed}", output / f"student_1_{seed}",
                                                 config_for("student", seed), args, output, truth,
                                                 seconds)
    row["student 2"] = train(f"student_2_{seed}", config_for("student", seed, labels_2), output,
                             seconds)
    if args.baselines:
      row["student, labelled only"] = train(f"student_labelled_only_{seed}",
                                            config_for("student", seed), output, seconds)
      longer = teacher_config.train.steps + config_for("student", seed).train.steps
      row[f"teacher, {longer} steps"] = train(f"teacher_long_{seed}",
                                              config_for("teacher", seed, steps=longer), output,
                                              seconds)
    rows.append((seed, row))
    print(f"seed {seed}: " + ", ".join(f"{name} {value:.3f}" for name, value in row.items()))

  names = list(rows[0][1])
  print("\nTest accuracy (359 images); 'labels k acc': the kept pseudo-labels' top class against the "
        "hidden labels, per row")
  print("| seed | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for seed, row in rows:
    print(f"| {seed} | " + " | ".join(f"{row[name]:.3f}" for name in names) + " |")
  if len(rows) > 1:
    print("| mean | " + " | ".join(f"{np.mean([r[n] for _, r in rows]):.3f}" for n in names) + " |")
  print("\nseconds: " + ", ".join(f"{name} {s:.0f}" for name, s in seconds.items())
        + f"; total {sum(seconds.values()):.0f}")


if __name__ == "__main__":
  main()
