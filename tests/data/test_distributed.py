"""Specification of per-host input: two real JAX processes read disjoint shares into global batches."""
import io
import json
import os
import socket
import sys

import numpy as np
from PIL import Image
import pytest

from vit_jax.data import jft

from .. import processes

# Its module-scoped jobs run once: pytest-xdist keeps this file on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_distributed")

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
NUM_EXAMPLES = 24  # 4 shards of 6: 2 shards (12 examples) per process, 3 steps of 4 per process.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _png(value):
  out = io.BytesIO()
  Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(out, "PNG")
  return out.getvalue()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  root = tmp_path_factory.mktemp("distributed")
  jft.write_split(str(root / "jft"), "train",
                  [(f"{i}.png", _png(i), [i % 3]) for i in range(NUM_EXAMPLES)],
                  num_classes=3, num_shards=4)
  port = _free_port()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("XLA_FLAGS", None)
  procs = [processes.start([sys.executable, WORKER, str(i), str(port), str(root / "jft"),
                            str(root / f"report{i}.json")], log=root / f"worker{i}.log", env=env)
           for i in range(2)]
  processes.wait(procs)  # On their progress: a loaded machine makes them slow, not failed.
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{p.tail()}"
  return [json.loads((root / f"report{i}.json").read_text()) for i in range(2)]


def test_two_processes_see_four_devices(reports):
  assert all(r["devices"] == 4 and r["local_devices"] == 2 for r in reports)


def test_each_process_reads_its_own_files_and_a_disjoint_share_covering_the_split(reports):
  assert set(reports[0]["files"]).isdisjoint(reports[1]["files"])
  shares = [sorted(sum(r["train_local"], [])) for r in reports]
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == list(range(NUM_EXAMPLES))


def test_global_batches_are_the_process_batches_side_by_side(reports):
  assert reports[0]["train_global"] == reports[1]["train_global"]  # Same global array everywhere.
  for step, global_ids in enumerate(reports[0]["train_global"]):
    assert global_ids == reports[0]["train_local"][step] + reports[1]["train_local"][step]


def test_eval_over_two_processes_covers_every_example_exactly_once(reports):
  batches = reports[0]["eval"]
  assert batches == reports[1]["eval"] and len(batches) == 3  # ceil(ceil(37 / 2) / 8)
  real = [i for b in batches for i, m in zip(b["ids"], b["mask"]) if m == 1.0]
  assert sorted(real) == list(range(37))
  assert sum(m == 0.0 for b in batches for m in b["mask"]) == 3 * 16 - 37
