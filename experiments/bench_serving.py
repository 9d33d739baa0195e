"""Inference throughput of the exported model beside timm's: images/s at batch 1 and 32 on this host.

  python experiments/bench_serving.py [--model=ViT-B/16] [--batches=1,32] [--rounds=3] \
      [--timm_python=/tmp/venv_timm/bin/python]

One model of random weights (throughput does not depend on the values), 224 px, 1000 classes, served
five ways in one run:
  jax xla       our model under jax.jit, float32, attention_impl='xla' (what the exports hold)
  jax auto      the same with the default attention_impl ('auto': our C++ kernel on CPU hosts)
  saved_model   `python -m vit_jax.export --format=saved_model` loaded in TensorFlow, its serving
                signature: uint8 images in; fed 224x224 images, so its resize is to the same size
  onnx          the ONNX export in onnxruntime (CPU provider), float32 preprocessed images in
  timm          timm's model in eval mode under torch.inference_mode, in --timm_python (a server
                process: timm and torch stay out of the project's environment)
The variants take turns: each round times every variant (in a rotated order) at each batch size, and
each ratio is the median over rounds of that round's ratio, so a neighbour's burst on a shared
machine moves both sides alike. The figures go to experiments/README.md, "Serving speed".
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import tensorflow as tf  # noqa: E402

from vit_jax import configuration  # noqa: E402
from vit_jax.export import onnx_model, saved_model  # noqa: E402
from vit_jax.export.trained import Trained  # noqa: E402
from vit_jax.models import create_model  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_train import TIMM_NAMES  # noqa: E402
from export_parity import random_variables  # noqa: E402

SIZE, CLASSES = 224, 1000

TIMM_SERVER = textwrap.dedent("""
    import json, sys, time, torch, timm
    name = sys.argv[1]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    inputs = {}
    def forward(batch):
        with torch.inference_mode():
            return model(inputs.setdefault(batch, torch.randn(batch, 3, 224, 224)))
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:  # one request per line: "batch calls"; the first call of a batch is a warm-up
        batch, calls = map(int, line.split())
        times = []
        for _ in range(calls):
            start = time.perf_counter(); forward(batch); times.append(time.perf_counter() - start)
        print(json.dumps({"seconds": sorted(times)[len(times) // 2]}), flush=True)
""")


def random_trained(name: str) -> Trained:
  """A Trained of `name` at 224 px with 1000 classes and random weights (no training run needed)."""
  config = configuration.base_config(name)
  config.data.image_size = SIZE
  model = create_model(name, num_classes=CLASSES, image_size=SIZE)
  return Trained("random", random_variables(model), None, config)


def timed(call, calls):
  """Median seconds of `calls` calls of call()."""
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def jax_variant(trained, attention_impl):
  model = create_model(trained.model_name, **dict(trained.overrides, attention_impl=attention_impl))
  apply = jax.jit(lambda x: model.apply(trained.variables, x, train=False))
  return lambda x: timed(lambda: apply(x).block_until_ready(), 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="ViT-B/16")
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--calls", default="5,1", help="timed calls per variant per round, per batch")
  parser.add_argument("--timm_python", default="/tmp/venv_timm/bin/python", help="'' leaves timm out")
  parser.add_argument("--skip", default="", help="variants to leave out, e.g. onnx")
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  calls = dict(zip(batches, (int(c) for c in args.calls.split(","))))
  skip = set(filter(None, args.skip.split(",")))
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; jax {jax.__version__}, "
        f"tensorflow {tf.__version__}, onnxruntime {onnxruntime.__version__}; {args.model} {SIZE} px",
        flush=True)
  trained = random_trained(args.model)
  rng = np.random.default_rng(0)
  pixels = {b: rng.uniform(-1, 1, (b, SIZE, SIZE, 3)).astype(np.float32) for b in batches}
  uint8 = {b: tf.constant(rng.integers(0, 256, (b, SIZE, SIZE, 3), dtype=np.uint8)) for b in batches}
  variants = {}  # name -> (batch -> seconds for one call)
  for impl in ("xla", "auto"):
    if f"jax {impl}" not in skip:
      run = jax_variant(trained, impl)
      variants[f"jax {impl}"] = lambda b, run=run: run(pixels[b])
  with tempfile.TemporaryDirectory() as tmp:
    if "saved_model" not in skip:
      start = time.perf_counter()
      saved_model.save_saved_model(trained, f"{tmp}/sm")
      serve = tf.saved_model.load(f"{tmp}/sm").signatures[saved_model.SIGNATURE]
      print(f"SavedModel exported and loaded in {time.perf_counter() - start:.0f} s", flush=True)
      variants["saved_model"] = lambda b: timed(lambda: serve(images=uint8[b])["logits"].numpy(), 1)
    if "onnx" not in skip:
      start = time.perf_counter()
      onnx_model.save_onnx(trained, f"{tmp}/m.onnx")
      session = onnxruntime.InferenceSession(f"{tmp}/m.onnx", providers=["CPUExecutionProvider"])
      print(f"ONNX exported and loaded in {time.perf_counter() - start:.0f} s", flush=True)
      variants["onnx"] = lambda b: timed(lambda: session.run(None, {"images": pixels[b]}), 1)
    if args.timm_python and "timm" not in skip:
      server = subprocess.Popen([args.timm_python, "-c", TIMM_SERVER, TIMM_NAMES[args.model]],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
      print(f"timm server: {server.stdout.readline().strip()}", flush=True)

      def timm_call(b):
        server.stdin.write(f"{b} 1\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())["seconds"]
      variants["timm"] = timm_call
    names = list(variants)
    for b in batches:  # warm-up: compiles, first-call allocations
      for name in names:
        variants[name](b)
    print("warmed up", flush=True)
    rounds = []
    for r in range(args.rounds):
      order = names[r % len(names):] + names[:r % len(names)]
      seconds = {}
      for b in batches:
        for name in order:
          seconds[(name, b)] = sorted(variants[name](b) for _ in range(calls[b]))[calls[b] // 2]
      rounds.append(seconds)
      print(f"round {r + 1} (load {os.getloadavg()[0]:.2f}): " + "; ".join(
          f"batch {b}: " + ", ".join(f"{n} {b / seconds[(n, b)]:.1f}" for n in names) for b in batches)
          + " img/s", flush=True)
    if "timm" in variants:
      server.stdin.close()
      server.wait()
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  print("\n| variant | " + " | ".join(f"batch {b} img/s | vs timm" for b in batches) + " |")
  print("|---|" + "---|---|" * len(batches))
  for name in names:
    cells = []
    for b in batches:
      cells.append(f"{b / np.median([s[(name, b)] for s in rounds]):.2f}")
      ratio = ([s[("timm", b)] / s[(name, b)] for s in rounds] if "timm" in variants else [])
      cells.append(f"{np.median(ratio):.2f}x" if ratio else "")
    print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
