"""One of the two processes of test_distributed.py: reads its share, builds global batches, reports.

Usage: distributed_worker.py PROCESS_ID PORT JFT_DIR OUT_JSON. Image pixels hold example ids, so
the parent test can tell which examples each process and each global batch held.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax import configuration  # noqa: E402
from vit_jax import parallel  # noqa: E402
from vit_jax.data import pipeline, sources  # noqa: E402


def _ids(array: jax.Array) -> list:
  """Example ids (pixel [0, 0, 0]) of a global image batch, gathered onto every process."""
  replicated = jax.jit(lambda x: x[:, 0, 0, 0], out_shardings=parallel.replicated(array.sharding.mesh))
  return np.rint(np.asarray(replicated(array))).astype(int).tolist()


def main(process_id: int, port: int, jft_dir: str, out_path: str) -> None:
  # A generous timeout: on a loaded machine the other process may take long to get here.
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                             initialization_timeout=300)
  mesh = parallel.make_mesh({"data": -1})
  rules = parallel.rules_for("data_parallel")
  report = {"devices": jax.device_count(), "local_devices": jax.local_device_count()}
  index, count = jax.process_index(), jax.process_count()

  # Train: JFT-like shards, one epoch; each process opens only its own files.
  config = configuration.data_config()
  config.update(source="jft", root=jft_dir, pp_train="decode|value_range(0, 255)|multi_hot",
                pp_eval="decode|value_range(0, 255)")
  source = sources.get_source(config)
  steps = min(source.shard_size("train", i, count) for i in range(count)) // 4
  batches = pipeline.train_batches(config, source=source, batch_size=8, image_size=4, seed=0,
                                   process_index=index, process_count=count)
  report["train_local"], report["train_global"] = [], []
  for _ in range(steps):
    local = next(batches)
    report["train_local"].append(np.rint(local["image"][:, 0, 0, 0]).astype(int).tolist())
    glob = parallel.global_batch(local, mesh, rules)
    assert glob["image"].shape == (8, 4, 4, 3) and glob["label"].shape == (8, source.num_classes)
    report["train_global"].append(_ids(glob["image"]))
  report["files"] = [os.path.basename(f) for f in source.files("train", index, count)]

  # Eval: 37 examples, 16 per global batch: the last batch padded and masked.
  images = np.arange(37, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
  indexed = sources.ArraySource("indexed", images, np.arange(37) % 3, 3, {"test": np.arange(37)})
  report["eval"] = []
  for local in pipeline.eval_batches(config, source=indexed, split="test", batch_size=16,
                                     image_size=4, process_index=index, process_count=count):
    glob = parallel.global_batch(local, mesh, rules)
    mask = jax.jit(lambda m: m, out_shardings=parallel.replicated(mesh))(glob["mask"])
    report["eval"].append({"ids": _ids(glob["image"]), "mask": np.asarray(mask).tolist()})
  with open(out_path, "w") as f:
    json.dump(report, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
