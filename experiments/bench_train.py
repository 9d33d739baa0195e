"""Training throughput and MFU of one model on whatever device JAX sees, optionally beside timm.

  python experiments/bench_train.py --model=ViT-B/16 --batch=8 --dtype=float32,bfloat16 \
      [--attention=fused] [--remat=none] [--timm_python=/tmp/timm_venv/bin/python] [--rounds=5]

Prints images/s and MFU per precision (AdamW step, synthetic data, 224 px, 1000 classes), the bf16/f32
ratio, and with --timm_python the same training step of timm's model in PyTorch (a server process in
that interpreter, started by this one) and the ratio ours/timm. The variants take turns: each round
times `--steps` steps of every variant (in a rotated order), and each ratio is the median over rounds
of that round's ratio, so a neighbour's burst on a shared machine moves both sides of a ratio alike.
"""
import argparse
import json
import os
import subprocess
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax import flops, parallel  # noqa: E402
from vit_jax.configuration import base_config  # noqa: E402
from vit_jax.train import loop  # noqa: E402
from vit_jax.train.step import make_train_step  # noqa: E402

TIMM_NAMES = {"ViT-B/16": "vit_base_patch16_224", "ViT-S/16": "vit_small_patch16_224",
              "ViT-Ti/16": "vit_tiny_patch16_224", "ViT-L/16": "vit_large_patch16_224",
              "ViT-B/32": "vit_base_patch32_224"}

TIMM_SERVER = textwrap.dedent("""
    import json, sys, time, torch, timm
    name, batch, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    for _ in range(warmup):
        step()
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:  # one request per line: the number of steps to time
        times = []
        for _ in range(int(line)):
            start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
        print(json.dumps({"seconds_per_step": sorted(times)[len(times) // 2]}), flush=True)
""")


class _Synthetic:
  num_classes = 1000

  def num_examples(self, split):
    del split
    return 10 ** 6


def ours(model, batch, dtype, attention, remat, warmup):
  """Our compiled train step on synthetic data; returns (time_steps(n) -> median s/step, MFU(s))."""
  config = base_config()
  config.model_name = model
  config.data.image_size = 224
  config.batch_size = batch
  config.train.steps = 1000
  config.optim.name = "adamw"
  config.optim.warmup_steps = 10
  config.model.dtype = dtype
  config.model.attention_impl = attention
  config.model.remat_policy = remat
  setup = loop.setup(config, _Synthetic())
  init = loop._init_fn(setup.model, setup.tx, 224, 0)  # pylint: disable=protected-access
  step = jax.jit(make_train_step(setup.model, setup.tx, setup.schedule),
                 in_shardings=(setup.state_shardings, None),
                 out_shardings=(setup.state_shardings, None), donate_argnums=(0,))
  rng = np.random.RandomState(0)
  local = {"image": rng.randn(batch, 224, 224, 3).astype(np.float32),
           "label": rng.randint(0, 1000, batch).astype(np.int32)}
  with parallel.activate(setup.mesh, setup.rules):
    holder = {"state": jax.jit(lambda: init(boxed=False), out_shardings=setup.state_shardings)()}
    data = parallel.global_batch(local, setup.mesh, setup.rules)

  def time_steps(n):
    times = []
    with parallel.activate(setup.mesh, setup.rules):
      for _ in range(n):
        start = time.perf_counter()
        holder["state"], metrics = step(holder["state"], data)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]

  time_steps(warmup)
  peak = flops.peak_flops_per_device(dtype) * setup.mesh.devices.size
  example_flops = flops.train_flops_per_example(setup.model)
  return time_steps, lambda seconds: example_flops * batch / seconds / peak


def timm(python, model, batch, warmup):
  """timm's train step in a server process; returns time_steps(n) -> median s/step."""
  server = subprocess.Popen([python, "-c", TIMM_SERVER, TIMM_NAMES[model], str(batch), str(warmup)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, TIMM_FUSED_ATTN="1"))
  json.loads(server.stdout.readline())  # warmed up

  def time_steps(n):
    server.stdin.write(f"{n}\n")
    server.stdin.flush()
    return json.loads(server.stdout.readline())["seconds_per_step"]
  return time_steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="ViT-B/16")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32,bfloat16")
  parser.add_argument("--attention", default="xla", choices=["xla", "fused"])
  parser.add_argument("--remat", default="none")
  parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--timm_python", default="")
  args = parser.parse_args()

  device = jax.devices()[0]
  print(f"device: {device.device_kind} x {jax.device_count()} ({jax.default_backend()}), "
        f"{args.model}, batch {args.batch}, attention {args.attention}, remat {args.remat}, "
        f"{args.rounds} rounds of {args.steps} steps per variant", flush=True)
  variants, mfu_of = {}, {}
  for dtype in args.dtype.split(","):
    variants[f"vit_jax {dtype}"], mfu_of[f"vit_jax {dtype}"] = ours(
        args.model, args.batch, dtype, args.attention, args.remat, args.warmup)
  if args.timm_python:
    variants["timm float32"] = timm(args.timm_python, args.model, args.batch, args.warmup)
  names = list(variants)
  rounds = []
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    seconds = {name: variants[name](args.steps) for name in order}
    rounds.append(seconds)
    print(f"round {r + 1}: " + ", ".join(f"{n} {args.batch / seconds[n]:.2f} img/s" for n in names),
          flush=True)

  def median(values):
    return float(np.median(values))

  for name in names:
    seconds = median([r[name] for r in rounds])
    mfu = f"  MFU {mfu_of[name](seconds):.1%}" if name in mfu_of else ""
    print(f"{name:17s} {args.batch / seconds:8.2f} img/s  {seconds:7.3f} s/step{mfu}")

  def ratio(faster, slower, label):
    if faster in variants and slower in variants:
      print(f"{label}: {median([r[slower] / r[faster] for r in rounds]):.2f}x (median of per-round ratios)")

  ratio("vit_jax bfloat16", "vit_jax float32", "bf16 / f32 speedup")
  ratio("vit_jax float32", "timm float32", "vit_jax f32 / timm f32")


if __name__ == "__main__":
  main()
