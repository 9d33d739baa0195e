"""Training throughput and MFU of one model on whatever device JAX sees, optionally beside timm.

  python experiments/bench_train.py --model=ViT-B/16 --batch=8 --dtype=float32,bfloat16 \
      [--attention=fused] [--remat=none] [--timm_python=/tmp/timm_venv/bin/python]

Prints images/s and MFU per precision (Adam step, synthetic data, 224 px, 1000 classes), the bf16/f32
ratio, and with --timm_python the same training step of timm's model in PyTorch (run in that
interpreter, in the same invocation) and the ratio ours/timm. Ratios are measured in one run.
"""
import argparse
import json
import os
import subprocess
import sys
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

TIMM_SCRIPT = textwrap.dedent("""
    import json, sys, time, torch, timm
    name, batch, steps, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
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
    times = []
    for _ in range(steps):
        start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
    print(json.dumps({"seconds_per_step": sorted(times)[len(times) // 2],
                      "threads": torch.get_num_threads()}))
""")


class _Synthetic:
  num_classes = 1000

  def num_examples(self, split):
    del split
    return 10 ** 6


def bench_ours(model, batch, dtype, attention, remat, steps, warmup):
  """Median seconds per train step of our model (Adam, synthetic data)."""
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
    state = jax.jit(lambda: init(boxed=False), out_shardings=setup.state_shardings)()
    data = parallel.global_batch(local, setup.mesh, setup.rules)
    for _ in range(warmup):
      state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = step(state, data)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  seconds = sorted(times)[len(times) // 2]
  peak = flops.peak_flops_per_device(dtype) * setup.mesh.devices.size
  mfu = flops.train_flops_per_example(setup.model) * batch / seconds / peak
  return seconds, mfu


def bench_timm(python, model, batch, steps, warmup):
  out = subprocess.run([python, "-c", TIMM_SCRIPT, TIMM_NAMES[model], str(batch), str(steps),
                        str(warmup)], capture_output=True, text=True, check=True,
                       env=dict(os.environ, TIMM_FUSED_ATTN="1"))
  return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_step"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="ViT-B/16")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32,bfloat16")
  parser.add_argument("--attention", default="xla", choices=["xla", "fused"])
  parser.add_argument("--remat", default="none")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--timm_python", default="")
  args = parser.parse_args()

  device = jax.devices()[0]
  print(f"device: {device.device_kind} x {jax.device_count()} ({jax.default_backend()}), "
        f"{args.model}, batch {args.batch}, attention {args.attention}, remat {args.remat}")
  rates = {}
  for dtype in args.dtype.split(","):
    seconds, mfu = bench_ours(args.model, args.batch, dtype, args.attention, args.remat,
                              args.steps, args.warmup)
    rates[dtype] = args.batch / seconds
    print(f"vit_jax {dtype:9s} {rates[dtype]:8.2f} img/s  {seconds:7.3f} s/step  MFU {mfu:.1%}",
          flush=True)
  if "float32" in rates and "bfloat16" in rates:
    print(f"bf16 / f32 speedup: {rates['bfloat16'] / rates['float32']:.2f}x")
  if args.timm_python:
    seconds = bench_timm(args.timm_python, args.model, args.batch, args.steps, args.warmup)
    timm_rate = args.batch / seconds
    print(f"timm      float32   {timm_rate:8.2f} img/s  {seconds:7.3f} s/step")
    if "float32" in rates:
      print(f"vit_jax f32 / timm f32: {rates['float32'] / timm_rate:.2f}x")


if __name__ == "__main__":
  main()
