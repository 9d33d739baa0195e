"""Masked patch prediction on the digits: fine-tuning from self-supervised pretraining vs from scratch.

  python experiments/masked_patch.py [--output=workdir/experiments/masked_patch] [--seeds=0]
      [--eval_every=25] [--supervised]

1. Pretrains configs/masked_patch.py:pretrain (ViT-tiny/4 at 16 px, the ViT paper's masked patch
   prediction, labels unused; configs/default.py's optimizer and duration) and reports the colour
   accuracy of the test split's corrupted patches at every evaluation, beside the accuracy of always
   predicting the test patches' most frequent colour.
2. For each seed, fine-tunes configs/masked_patch.py:finetune (32 px, configs/default.py's
   fine-tuning) from that checkpoint, and trains the same config from a random initialisation with
   the same seed and budget; the test accuracy every `eval_every` steps and at the end.
3. With --supervised, also the default job's supervised pretraining at 16 px fine-tuned the same way
   (what `make run` does), the comparison the paper makes.
Every run starts afresh in its own directory under --output. The figures go to experiments/README.md.
"""
import argparse
import collections
import json
import os
import pathlib
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax.config_cli import load_config_file  # noqa: E402
from vit_jax.data import pipeline, sources  # noqa: E402
from vit_jax.models.registry import create_model  # noqa: E402
from vit_jax.train import loop, masked_patch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_for(spec: str, *, seed: int, eval_every: int, init_from: str = ""):
  config = load_config_file(f"{ROOT}/configs/{spec}")
  config.seed = seed
  config.evals.test.every = eval_every
  config.init_from = init_from
  return config


def run(name: str, config, output: pathlib.Path) -> tuple[list[tuple[int, float]], float]:
  """Trains afresh in output/name; returns the test accuracy at each evaluation (step, value),
  the final one included, and the wall seconds."""
  workdir = output / name
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  loop.train_and_evaluate(config, str(workdir))
  seconds = time.perf_counter() - start
  curve = []
  with open(workdir / "metrics.jsonl") as f:
    for line in f:
      row = json.loads(line)
      if "test_accuracy" in row:
        curve.append((row["step"], row["test_accuracy"]))
  return curve, seconds


def majority_colour_accuracy(config) -> tuple[float, dict[int, float]]:
  """The accuracy of always predicting the most frequent colour class of the test patches, and
  the share of the most frequent classes (the corrupted patches are a uniform half of them)."""
  source = sources.get_source(config.data)
  size = config.data.image_size
  grid = size // create_model(config.model_name).patch_size
  counts = collections.Counter()
  for batch in pipeline.eval_batches(config.data, source=source, batch_size=config.eval_batch_size,
                                     image_size=size):
    classes = np.asarray(masked_patch.mean_colour_classes(batch["image"], grid))
    counts.update(classes[batch["mask"] > 0].ravel().tolist())
  total = sum(counts.values())
  return counts.most_common(1)[0][1] / total, {c: n / total for c, n in counts.most_common(4)}


def print_curves(title: str, curves: dict[str, list[tuple[int, float]]]) -> None:
  print(f"\n{title}")
  names = list(curves)
  steps = sorted({step for curve in curves.values() for step, _ in curve})
  print("| step | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for step in steps:
    cells = [next((f"{value:.3f}" for s, value in curves[name] if s == step), "") for name in names]
    print(f"| {step} | " + " | ".join(cells) + " |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", default=str(ROOT / "workdir" / "experiments" / "masked_patch"))
  parser.add_argument("--seeds", default="0", help="fine-tuning seeds, comma-separated")
  parser.add_argument("--eval_every", type=int, default=25, help="fine-tuning evaluation period")
  parser.add_argument("--supervised", action="store_true",
                      help="also fine-tune from configs/default.py's supervised pretraining")
  args = parser.parse_args()
  output = pathlib.Path(args.output)
  seeds = [int(s) for s in args.seeds.split(",")]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")

  pretrain_config = config_for("masked_patch.py:pretrain", seed=0, eval_every=75)
  baseline, shares = majority_colour_accuracy(pretrain_config)
  pretrained = {"mpp": run("mpp_pretrain", pretrain_config, output)}
  if args.supervised:
    pretrained["supervised"] = run(
        "supervised_pretrain", config_for("default.py:pretrain", seed=0, eval_every=75), output)
  print_curves("Pretraining, test accuracy (mpp: colour of the corrupted patches; supervised: class)",
               {name: curve for name, (curve, _) in pretrained.items()})
  print("most frequent test colour classes (share of patches): "
        + ", ".join(f"{c}: {share:.3f}" for c, share in shares.items())
        + f"; always predicting the first scores {baseline:.3f}")

  finals = collections.defaultdict(list)
  for seed in seeds:
    curves, seconds = {}, {}
    starts = {"scratch": ""}
    starts.update({f"from {name}": str(output / f"{name}_pretrain") for name in pretrained})
    for name, init_from in starts.items():
      config = config_for("masked_patch.py:finetune", seed=seed, eval_every=args.eval_every,
                          init_from=init_from)
      curves[name], seconds[name] = run(f"finetune_{name.replace(' ', '_')}_{seed}", config, output)
      finals[name].append(curves[name][-1][1])
    print_curves(f"Fine-tuning at 32 px, seed {seed}, test accuracy", curves)
  print("\nPretraining seconds: " + ", ".join(f"{n} {s:.0f}" for n, (_, s) in pretrained.items()))
  print("\nFinal test accuracy (fine-tuning, over seeds " + args.seeds + "):")
  for name, values in finals.items():
    print(f"  {name}: " + ", ".join(f"{v:.3f}" for v in values)
          + (f" (mean {np.mean(values):.3f})" if len(values) > 1 else ""))


if __name__ == "__main__":
  main()
