"""Input-pipeline benchmark: JPEG throughput per CPU core, and trainer step time real vs synthetic.

  python experiments/bench_input.py [--images=512] [--steps=20] [--repeats=16] [--jpeg_repeats=4]

1. Writes synthetic JPEG shards (ImageNet-like 500x375 photos, JFT-like TFRecords) to a temp dir and
   measures the pretraining pipeline `decode|inception_crop(224)|flip_lr|value_range(-1, 1)` (and
   the fused `decode_jpeg_and_inception_crop(224)`) with tf.data's default single private thread:
   images per second of wall time and per CPU-second (= per core) of the whole process.
2. Times the trainer's step on the default config (configs/default.py:pretrain) fed by the real
   pipeline and by one in-memory synthetic batch, in pairs of back-to-back runs, and reports the
   median of the per-pair ratios (target: at most 1.05, i.e. the pipeline is never the bottleneck),
   also for the same augmentation as one tf.data call per example; then the same for the
   pretraining pipeline from the JPEG shards feeding a 224-px model (--jpeg_model).
The figures go to experiments/README.md.
"""
import argparse
import importlib.util
import io
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vit_jax import configuration  # noqa: E402
from vit_jax import host_memory  # noqa: E402

# As `python -m vit_jax.main` does, before jax starts a thread (VIT_JAX_KEEP_FREED_PAGES=0: off).
KEPT_PAGES = host_memory.keep_freed_pages() if __name__ == "__main__" else None

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vit_jax import parallel  # noqa: E402
from vit_jax.data import jft, pipeline, sources  # noqa: E402
from vit_jax.train import loop  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRETRAIN_PP = "decode|inception_crop(224)|flip_lr|value_range(-1, 1)|multi_hot"
FUSED_PP = "decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)|multi_hot"


def synthetic_jpegs(n: int, seed: int = 0):
  """n photo-like 500x375 JPEGs (smooth random fields plus texture), quality 90, ~110 KB each."""
  rng = np.random.default_rng(seed)
  for i in range(n):
    coarse = rng.integers(0, 256, (12, 16, 3), np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), np.int16)
    image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=90)
    yield f"synthetic_{i:05d}.jpg", out.getvalue(), [i % 1000]


def pipeline_throughput(directory: str, spec: str, batches: int = 12, batch_size: int = 32):
  """(images/s wall, images per CPU-second) of the train pipeline after two warm-up batches."""
  config = configuration.data_config()
  config.update(source="jft", root=directory, pp_train=spec)
  it = pipeline.train_batches(config, batch_size=batch_size, image_size=224, seed=0)
  for _ in range(2):
    next(it)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  images = batches * batch_size
  return images / wall, images / cpu


def load_default_config():
  spec = importlib.util.spec_from_file_location("default_config", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("pretrain")


def step_time_ratio(config, steps: int, repeats: int):
  """Step times with the real pipeline and with a synthetic in-memory batch, in `repeats` pairs of
  back-to-back runs of `steps` steps (the order alternating); returns the median step times, the
  median of the per-pair ratios (a neighbour's burst moves both runs of a pair alike) and the runs."""
  source = sources.get_source(config.data)
  s = loop.setup(config, source)
  step = s.train_step
  batches = pipeline.train_batches(
      config.data, source=source, batch_size=config.batch_size, image_size=config.data.image_size,
      seed=config.seed, augment=config.data.augment)
  synthetic = dict(next(batches))
  times = {"real": [], "synthetic": []}
  state = s.init_state()
  with parallel.activate(s.mesh, s.rules):
    state, _ = step(state, parallel.global_batch(synthetic, s.mesh, s.rules))  # Compile.
    for repeat in range(repeats):
      for kind in (("synthetic", "real"), ("real", "synthetic"))[repeat % 2]:
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):  # As the trainer's loop: next batch while the last step runs.
          local = next(batches) if kind == "real" else synthetic
          state, metrics = step(state, parallel.global_batch(local, s.mesh, s.rules))
        jax.block_until_ready(metrics)
        times[kind].append((time.perf_counter() - start) / steps)
  ratio = np.median(np.array(times["real"]) / np.array(times["synthetic"]))
  return np.median(times["real"]), np.median(times["synthetic"]), ratio, times


def report_ratio(name, config, steps, repeats):
  real, synth, ratio, times = step_time_ratio(config, steps, repeats)
  print(f"{name} ({config.model_name}, {config.data.image_size} px, batch {config.batch_size}, "
        f"{jax.device_count()} device): median step {1e3 * real:.1f} ms with the real pipeline, "
        f"{1e3 * synth:.1f} ms with synthetic in-memory data: ratio {ratio:.3f} (median of "
        f"{repeats} pairs)")
  print("  runs (ms): " + ", ".join(f"{k} " + "/".join(f"{1e3 * t:.1f}" for t in v)
                                   for k, v in times.items()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=16)
  parser.add_argument("--jpeg_model", default="ViT-Ti/16", help="'' skips the JPEG scenario")
  parser.add_argument("--jpeg_batch", type=int, default=32)
  parser.add_argument("--jpeg_steps", type=int, default=5)
  parser.add_argument("--jpeg_repeats", type=int, default=4)
  args = parser.parse_args()
  print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"jax devices: {jax.devices()}; keep freed host pages: {KEPT_PAGES.applied} "
        f"({KEPT_PAGES.reason})")
  with tempfile.TemporaryDirectory() as tmp:  # Holds the JPEG shards for both measurements.
    info = jft.write_split(tmp, "train", synthetic_jpegs(args.images), num_classes=1000,
                           num_shards=8)
    files = info["splits"]["train"]["files"]
    size = sum(os.path.getsize(os.path.join(tmp, f["name"])) for f in files) / args.images
    print(f"{args.images} synthetic 500x375 JPEGs in 8 shards, {size / 1e3:.0f} KB each")
    for name, spec in (("decode + inception_crop(224) + flip", PRETRAIN_PP),
                       ("fused decode_jpeg_and_inception_crop(224) + flip", FUSED_PP)):
      wall, per_cpu = pipeline_throughput(tmp, spec)
      print(f"  {name}: {wall:.0f} images/s wall (1 tf.data thread), {per_cpu:.0f} images per "
            "CPU-second")
    report_ratio("default config", load_default_config(), args.steps, args.repeats)
    per_example = load_default_config()  # The same augmentation as one tf.data call per example.
    per_example.data.pp_train = pipeline.default_pp_train(per_example.data.augment,
                                                          per_example.data.image_size)
    per_example.data.pp_batch = ""
    report_ratio("default config, per-example pipeline", per_example, args.steps, args.repeats)
    if args.jpeg_model:  # The pretraining pipeline from JPEG shards, feeding a 224-px model.
      config = load_default_config()
      config.model_name = args.jpeg_model
      config.data.update(source="jft", root=tmp, image_size=224, pp_train=PRETRAIN_PP, pp_batch="")
      config.batch_size = args.jpeg_batch
      report_ratio("JPEG shards", config, args.jpeg_steps, args.jpeg_repeats)
  print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
