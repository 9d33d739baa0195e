"""One pass of a compiled step over an eval split, sharded over the devices as training shards its
batches, counting every example once: the step's sums, and its per-example outputs back on the host.

A step maps (variables, global batch) to scalars, summed over the pass, and per-example arrays (the
batch on their first axis). Each process takes back its own rows of those arrays, in the order of
its local batch, so they line up with what only the host holds (keys, positions); `keep` picks and
reduces what to keep of them. At the end every process's rows are gathered, so that each process
holds all of them, and the padding (mask 0) is dropped.
"""
import dataclasses
from typing import Any, Callable, Iterable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from vit_jax import parallel

# The entries of a batch the steps read; the others (keys, positions) stay on the host.
DEVICE_KEYS = ("image", "label", "mask")
Keep = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclasses.dataclass
class Pass:
  sums: dict[str, float]       # the step's scalars, summed over every batch
  rows: dict[str, np.ndarray]  # what `keep` kept, one row per real example, from every process
  skipped: int                 # examples that could not be decoded (not counted), all processes


def local_rows(array: jax.Array, mesh: jax.sharding.Mesh, rules) -> np.ndarray:
  """This process's rows of a global batch-sharded array, in the order of its local batch."""
  spec = parallel.batch_sharding(mesh, rules, array.ndim).spec
  return np.asarray(multihost_utils.global_array_to_host_local_array(array, mesh, spec))


def run(step: Callable[[Any, dict], dict], variables: Any, batches: Iterable[dict[str, np.ndarray]],
        mesh: jax.sharding.Mesh, rules, keep: Optional[Keep] = None) -> Pass:
  """Runs `step` on every batch. keep(outputs, local_batch) -> {name: (local_batch, ...) array}
  receives this process's rows of the step's per-example outputs and its local batch; without it
  the per-example outputs are kept as they are."""
  scalars: list[dict[str, jax.Array]] = []  # Read once, after the last batch: no per-batch wait.
  kept: dict[str, list[np.ndarray]] = {}

  def collect(out, local):
    scalars.append({k: v for k, v in out.items() if v.ndim == 0})
    rows = {k: local_rows(v, mesh, rules) for k, v in out.items() if v.ndim > 0}
    rows = keep(rows, local) if keep is not None else rows
    for key, value in {**rows, "mask": local["mask"]}.items():
      kept.setdefault(key, []).append(np.asarray(value))

  # A batch's per-example outputs are read once the next batch is dispatched, so that the host
  # prepares the next batch while the device computes this one (reading them at once would wait).
  previous = None
  with parallel.activate(mesh, rules):
    for local in batches:
      batch = parallel.global_batch({k: local[k] for k in DEVICE_KEYS if k in local}, mesh, rules)
      out = step(variables, batch)
      if previous is not None:
        collect(*previous)
      previous = (out, local)
    if previous is not None:
      collect(*previous)
  sums: dict[str, float] = {}
  for batch_sums in jax.device_get(scalars):  # In batch order, as float64 on the host.
    for key, value in batch_sums.items():
      sums[key] = sums.get(key, 0.0) + float(value)
  skipped = np.array([getattr(batches, "skipped", 0)], np.int64)
  joined = {key: np.concatenate(parts) for key, parts in kept.items()}
  if set(joined) <= {"mask"}:  # nothing per example was kept
    joined = {}
  if jax.process_count() > 1:  # every process has as many batches of the same size
    joined, skipped = jax.tree.map(np.asarray, multihost_utils.process_allgather(
        (joined, skipped), tiled=True))
  real = joined.pop("mask") > 0 if joined else None
  return Pass(sums, {key: value[real] for key, value in joined.items()}, int(skipped.sum()))
