"""replica_writes: on CPU a replicated array is saved whole by one device, into the same files."""
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vit_jax.checkpoint import Checkpointer, replica_writes


def replicated_state():
  """Arrays on all 8 fake CPU devices: replicated ones (what replica-parallel writes split) and
  sharded ones, of float and integer dtypes."""
  mesh = Mesh(np.array(jax.devices()), ("d",))
  rng = np.random.default_rng(0)
  return {"w": jax.device_put(rng.normal(size=(16, 24)).astype(np.float32), NamedSharding(mesh, P())),
          "rows": jax.device_put(rng.normal(size=(16, 3)).astype(np.float32),
                                 NamedSharding(mesh, P("d"))),
          "step": jax.device_put(np.int32(7), NamedSharding(mesh, P()))}


def named_files(directory):
  """The checkpoint's files (a set), a directory 'd' of OCDBT's content-named data files as itself."""
  return {os.path.relpath(root if os.path.basename(root) == "d" else os.path.join(root, name),
                          directory) for root, _, names in os.walk(directory) for name in names}


@pytest.fixture
def orbax_default_handler():
  """Puts Orbax's default jax.Array handler back for the test, and ours after it."""
  ours = ocp.type_handlers.get_type_handler(jax.Array)
  ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(
      array_metadata_store=replica_writes.array_metadata_store.Store()), override=True)
  yield
  ocp.type_handlers.register_type_handler(jax.Array, ours, override=True)


def save(directory, state):
  with Checkpointer(directory) as ckpt:
    ckpt.save(1, state, {"data_position": 3}, force=True)


def test_on_cpu_a_checkpointer_saves_replicated_arrays_without_slicing_them(tmp_path, monkeypatch):
  assert jax.default_backend() == "cpu" and jax.device_count() == 8
  slices = []
  real_slice = jax.lax.slice_in_dim
  monkeypatch.setattr(jax.lax, "slice_in_dim", lambda *a, **k: slices.append(a) or real_slice(*a, **k))
  save(tmp_path / "ours", replicated_state())
  assert replica_writes.write_replicas_whole_on_cpu()
  assert slices == []


def test_orbax_default_slices_them_and_writes_the_same_files(tmp_path, monkeypatch,
                                                             orbax_default_handler):
  state = replicated_state()
  save(tmp_path / "ours", state)  # Checkpointer registered ours once per process, before the fixture.
  slices = []
  real_slice = jax.lax.slice_in_dim
  monkeypatch.setattr(jax.lax, "slice_in_dim", lambda *a, **k: slices.append(a) or real_slice(*a, **k))
  with Checkpointer(tmp_path / "default") as ckpt:  # Registers nothing again (once per process).
    ckpt.save(1, state, {"data_position": 3}, force=True)
  assert len(slices) >= 8  # Replica-parallel: each replica of "w" writes one slice of it.
  assert named_files(tmp_path / "ours") == named_files(tmp_path / "default")
  for name in ("ours", "default"):
    with Checkpointer(tmp_path / name) as ckpt:
      restored, extra = ckpt.restore()
    assert extra["data_position"] == 3
    jax.tree.map(lambda got, want: np.testing.assert_array_equal(got, want), restored,
                 jax.device_get(state))
