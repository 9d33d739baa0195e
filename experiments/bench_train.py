"""Training throughput and MFU of one model on whatever device JAX sees, optionally beside timm.

  python experiments/bench_train.py --model=ViT-B/16 --batch=8 --dtype=float32,bfloat16 \
      [--attention=auto,cpu] [--remat=none] [--timm_python=/tmp/timm_venv/bin/python] [--rounds=5]
  python experiments/bench_train.py --model=ViT-L/16 --batch=auto --dtype=bfloat16 --attention=fused

Prints images/s and MFU per precision (AdamW step, synthetic data, 224 px, 1000 classes), the bf16/f32
ratio, and with --timm_python the same training step of timm's model in PyTorch (a server process in
that interpreter, started by this one; on the GPU when JAX runs on one, bf16 as autocast) and the
ratio ours/timm. --batch=auto picks the largest multiple of 32 whose compiled step fits the device's
memory (XLA's memory analysis, fitted from two smaller compiles). The variants take turns: each round
times `--steps` steps of every variant (in a rotated order), and each ratio is the median over rounds
of that round's ratio, so a neighbour's burst on a shared machine moves both sides of a ratio alike.
--attention takes a list too (e.g. auto,cpu): each precision then runs with each attention path, and
the ratios are given per path and between the paths.
"""
import argparse
import json
import os
import subprocess
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vit_jax import host_memory  # noqa: E402

# As `python -m vit_jax.main` does, before jax starts a thread (VIT_JAX_KEEP_FREED_PAGES=0: off).
KEPT_PAGES = host_memory.keep_freed_pages() if __name__ == "__main__" else None

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax import flops, parallel  # noqa: E402
from vit_jax.configuration import base_config  # noqa: E402
from vit_jax.models.layers import ATTENTION_IMPLS  # noqa: E402
from vit_jax.train import build  # noqa: E402

TIMM_NAMES = {"ViT-B/16": "vit_base_patch16_224", "ViT-S/16": "vit_small_patch16_224",
              "ViT-Ti/16": "vit_tiny_patch16_224", "ViT-L/16": "vit_large_patch16_224",
              "ViT-B/32": "vit_base_patch32_224"}

TIMM_SERVER = textwrap.dedent("""
    import contextlib, json, sys, time, torch, timm
    name, batch, warmup, device, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000).train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    def precision():  # f32 parameters; bf16 compute as autocast (PyTorch's mixed precision)
        if dtype == "bfloat16":
            return torch.autocast(device_type=device, dtype=torch.bfloat16)
        return contextlib.nullcontext()
    def step():
        opt.zero_grad(set_to_none=True)
        with precision():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    for _ in range(warmup):
        step()
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:  # one request per line: the number of steps to time
        times = []
        for _ in range(int(line)):
            start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
        print(json.dumps({"seconds_per_step": sorted(times)[len(times) // 2]}), flush=True)
""")


def _compile(model, batch, dtype, attention, remat):
  """The trainer's AdamW step for `batch` images, compiled; returns (setup, executable, peak bytes)."""
  config = base_config(model)
  config.data.image_size = 224
  config.batch_size = batch
  config.train.steps = 1000
  config.optim.name = "adamw"
  config.optim.warmup_steps = 10
  # The step timm's side runs: torch.optim.AdamW's defaults (weight decay 0.01), no clipping.
  config.optim.weight_decay = 0.01
  config.optim.grad_clip_norm = 0.0
  config.model.dtype = dtype
  config.model.attention_impl = attention
  config.model.remat_policy = remat
  setup = build.setup(config, num_classes=1000, train_examples=10 ** 6)
  with parallel.activate(setup.mesh, setup.rules):
    compiled = setup.train_step.lower(setup.abstract_state, setup.abstract_batch()).compile()
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes)
  return setup, compiled, peak


def free_device_memory(device) -> int:
  """What JAX may still allocate on the device (allocator limit - in use); 0 where it does not say."""
  stats = device.memory_stats() or {}
  return int(stats.get("bytes_limit", 0)) - int(stats.get("bytes_in_use", 0))


def largest_batch(model, dtype, attention, remat, memory_bytes, multiple=32, headroom=0.9):
  """The largest multiple of `multiple` whose compiled step fits headroom x memory_bytes, with its
  compile: peak memory is fixed + per-example x batch, fitted from the compiles at 1x and 2x
  `multiple`, then confirmed (and stepped down if XLA's plan for that batch does not fit)."""
  budget = headroom * memory_bytes
  small = _compile(model, multiple, dtype, attention, remat)[2]
  large = _compile(model, 2 * multiple, dtype, attention, remat)[2]
  per_example = (large - small) / multiple
  batch = int((budget - (small - per_example * multiple)) / per_example) // multiple * multiple
  while batch >= multiple:
    setup, compiled, peak = _compile(model, batch, dtype, attention, remat)
    print(f"  {model} {dtype}: batch {batch} plans {peak / 2**30:.1f} GiB of "
          f"{memory_bytes / 2**30:.1f} GiB", flush=True)
    if peak <= budget:
      return batch, setup, compiled
    batch -= multiple
  raise SystemExit(f"{model} {dtype}: not even batch {multiple} fits {memory_bytes / 2**30:.1f} GiB; "
                   "use --remat=full or a smaller model")


def ours(model, batch, dtype, attention, remat, warmup, memory_bytes=0):
  """Our compiled train step on synthetic data; returns (batch, time_steps(n) -> median s/step,
  MFU(s)). batch 0 means the largest that fits memory_bytes (0: the device's free memory now)."""
  if batch:
    setup, step, _ = _compile(model, batch, dtype, attention, remat)
  else:
    memory_bytes = memory_bytes or free_device_memory(jax.devices()[0])
    batch, setup, step = largest_batch(model, dtype, attention, remat, memory_bytes)
  rng = np.random.RandomState(0)
  local = {"image": rng.randn(batch, 224, 224, 3).astype(np.float32),
           "label": rng.randint(0, 1000, batch).astype(np.int32)}
  holder = {"state": setup.init_state()}
  with parallel.activate(setup.mesh, setup.rules):
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
  return batch, time_steps, lambda seconds: example_flops * batch / seconds / peak


def timm(python, model, batch, warmup, device, dtype):
  """timm's train step in a server process; returns time_steps(n) -> median s/step."""
  server = subprocess.Popen([python, "-c", TIMM_SERVER, TIMM_NAMES[model], str(batch), str(warmup),
                             device, dtype],
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
  parser.add_argument("--batch", default="8", help="images per step, or 'auto': the most that fit")
  parser.add_argument("--dtype", default="float32,bfloat16")
  parser.add_argument("--attention", default="auto",
                      help="attention_impl, or a comma-separated list of them: auto (the model's "
                           "default: the backend's fastest), xla, fused (cuDNN on GPUs), cpu (our C++ "
                           "kernel on CPU hosts), pallas (TPU)")
  parser.add_argument("--remat", default="none")
  parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--timm_python", default="")
  parser.add_argument("--timm_dtype", default="float32", choices=["float32", "bfloat16"],
                      help="timm's precision (bfloat16: autocast over f32 parameters)")
  parser.add_argument("--memory_gib", type=float, default=0.0,
                      help="memory that --batch=auto fills (default: the device's allocator limit)")
  args = parser.parse_args()
  attentions = args.attention.split(",")
  unknown = sorted(set(attentions) - set(ATTENTION_IMPLS))
  if unknown:
    parser.error(f"--attention: unknown {unknown}; choose from {ATTENTION_IMPLS}")

  device = jax.devices()[0]
  memory_bytes = int(args.memory_gib * 2**30)
  if args.batch == "auto" and not (memory_bytes or free_device_memory(device)):
    parser.error(f"--batch=auto: {device.device_kind} does not report its memory; give --memory_gib")
  batch = 0 if args.batch == "auto" else int(args.batch)
  print(f"device: {device.device_kind} x {jax.device_count()} ({jax.default_backend()}, "
        f"{free_device_memory(device) / 2**30:.1f} GiB free for JAX), jax {jax.__version__}, {args.model}, "
        f"batch {args.batch}, attention {args.attention}, remat {args.remat}, "
        f"{args.rounds} rounds of {args.steps} steps per variant", flush=True)
  print(f"keep freed host pages: {KEPT_PAGES.applied} ({KEPT_PAGES.reason})", flush=True)
  variants, mfu_of, batch_of = {}, {}, {}
  # With one attention path the names stay "vit_jax <dtype>"; with several each carries its path.
  paths = {attention: f" {attention}" if len(attentions) > 1 else "" for attention in attentions}
  for dtype in args.dtype.split(","):
    for attention, path in paths.items():
      name = f"vit_jax {dtype}{path}"
      batch_of[name], variants[name], mfu_of[name] = ours(
          args.model, batch, dtype, attention, args.remat, args.warmup, memory_bytes)
  if args.timm_python:
    if not batch:
      parser.error("--timm_python needs a fixed --batch (both sides train the same batch)")
    timm_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    name = f"timm {args.timm_dtype}"
    batch_of[name] = batch
    variants[name] = timm(args.timm_python, args.model, batch, args.warmup, timm_device,
                          args.timm_dtype)
  names = list(variants)
  rounds = []
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    seconds = {name: variants[name](args.steps) for name in order}
    rounds.append(seconds)
    print(f"round {r + 1}: " + ", ".join(f"{n} {batch_of[n] / seconds[n]:.2f} img/s" for n in names),
          flush=True)

  def median(values):
    return float(np.median(values))

  for name in names:
    seconds = median([r[name] for r in rounds])
    mfu = f"  MFU {mfu_of[name](seconds):.1%}" if name in mfu_of else ""
    print(f"{name:26s} batch {batch_of[name]:4d} {batch_of[name] / seconds:8.2f} img/s  "
          f"{seconds:7.3f} s/step{mfu}")

  def ratio(faster, slower, label):
    """Images/s of `faster` over images/s of `slower`, the median over rounds."""
    if faster in variants and slower in variants:
      speedups = [r[slower] / batch_of[slower] * batch_of[faster] / r[faster] for r in rounds]
      print(f"{label}: {median(speedups):.2f}x (median of per-round ratios)")

  precisions = (("float32", "f32"), ("bfloat16", "bf16"))
  for path in paths.values():
    ratio(f"vit_jax bfloat16{path}", f"vit_jax float32{path}", f"bf16 / f32 speedup{path}")
    for dtype, short in precisions:
      ratio(f"vit_jax {dtype}{path}", f"timm {dtype}", f"vit_jax {short}{path} / timm {short}")
  first, *others = attentions
  for other in others:
    for dtype, short in precisions:
      ratio(f"vit_jax {dtype} {other}", f"vit_jax {dtype} {first}",
            f"vit_jax {short}: {other} / {first}")


if __name__ == "__main__":
  main()
