"""Per-device memory of ViT-H/14 and ViT-g/14 on 64- and 256-device meshes, by strategy and remat policy,
and the largest per-device batch that fits 16 GiB and 80 GiB, from vit_jax.plan (simulated meshes).

  python experiments/plan_pods.py > experiments/plan_results.md

Each row compiles the scanned train step (Adam, f32 params, 224 px) for fake CPU devices; nothing is
allocated. Memory is XLA's per-device arguments + temporaries of that compiled program.
"""
import re
import subprocess
import sys

MESHES = {
    64: {"data_parallel": "data:64,fsdp:1,tensor:1", "fsdp": "data:8,fsdp:8,tensor:1",
         "fsdp_tensor": "data:4,fsdp:8,tensor:2"},
    256: {"data_parallel": "data:256,fsdp:1,tensor:1", "fsdp": "data:16,fsdp:16,tensor:1",
          "fsdp_tensor": "data:8,fsdp:16,tensor:2"},
}
PER_DEVICE_BATCH = 32


def run(model, mesh, strategy, remat, batch):
  """Runs the planner once; returns its per-device figures in GiB."""
  cmd = [sys.executable, "-m", "vit_jax.plan", "--config=configs/default.py:pretrain", f"--mesh={mesh}",
         f"--config.model_name={model}", "--config.data.image_size=224", f"--config.batch_size={batch}",
         f"--config.sharding={strategy}", "--config.model.scan_layers=True",
         f"--config.model.remat_policy={remat}", "--config.optim.name=adam"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True).stdout
  def field(name):
    return float(re.search(rf"{name}\s+([\d.]+) GiB", out).group(1))
  return {"params": field("parameters"), "opt": field("optimizer state"),
          "temp": field("XLA temporaries"), "peak": field(r"peak \(sum\)")}


def main():
  print("| model | devices | strategy | remat | params GiB | opt state GiB | temporaries GiB | "
        f"peak GiB (batch {PER_DEVICE_BATCH}/device) |")
  print("|---|---|---|---|---|---|---|---|")
  fits = []
  for model in ("ViT-H/14", "ViT-g/14"):
    for devices, meshes in MESHES.items():
      batch = PER_DEVICE_BATCH * devices
      for strategy, mesh in meshes.items():
        for remat in (("none", "full", "save_dots") if strategy == "fsdp" else ("full",)):
          r = run(model, mesh, strategy, remat, batch)
          print(f"| {model} | {devices} | {strategy} | {remat} | {r['params']:.3f} | "
                f"{r['opt']:.3f} | {r['temp']:.2f} | {r['peak']:.2f} |", flush=True)
      # Largest per-device batch under fsdp: peak is linear in the batch; fit it from two compiles.
      for remat in ("full", "none"):
        small = run(model, meshes["fsdp"], "fsdp", remat, 16 * devices)["peak"]
        large = run(model, meshes["fsdp"], "fsdp", remat, 32 * devices)["peak"]
        per_example, fixed = (large - small) / 16, small - 16 * (large - small) / 16
        fits.append((model, devices, remat, fixed, per_example,
                     [int((cap - fixed) // per_example) for cap in (16, 80)]))
  print("\nLargest per-device batch under fsdp (peak = fixed + per_example x batch, fitted from "
        "batches 16 and 32 per device):\n")
  print("| model | devices | remat | fixed GiB | GiB per example | fits 16 GiB | fits 80 GiB |")
  print("|---|---|---|---|---|---|---|")
  for model, devices, remat, fixed, per_example, (b16, b80) in fits:
    print(f"| {model} | {devices} | {remat} | {fixed:.2f} | {per_example:.3f} | {b16} | {b80} |",
          flush=True)


if __name__ == "__main__":
  main()
