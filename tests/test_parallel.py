"""Specification of the mesh and the logical-axis rules."""
import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from vit_jax import parallel


def test_one_axis_fills_the_remaining_devices():
  assert parallel.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert parallel.mesh_shape({"data": 1, "fsdp": -1}, 8) == (1, 8, 1)


@pytest.mark.parametrize("sizes, message", [
    ({"data": -1, "fsdp": -1}, "only one mesh axis"),
    ({"data": 3}, "needs 3 devices but 8"),
    ({"data": -1, "fsdp": 3}, "not divisible"),
    ({"model": 2}, "unknown mesh axes"),
])
def test_impossible_meshes_are_clear_errors(sizes, message):
  with pytest.raises(ValueError, match=message):
    parallel.mesh_shape(sizes, 8)


def test_mesh_has_named_auto_axes_over_all_devices():
  mesh = parallel.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_batch_is_split_over_data_and_fsdp_in_every_strategy():
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2})
  for strategy in parallel.RULES:
    sharding = parallel.batch_sharding(mesh, parallel.rules_for(strategy), ndim=4)
    assert sharding.spec == PartitionSpec(("data", "fsdp"), None, None, None)


@pytest.mark.parametrize("sizes, shards", [
    ({"data": 4, "fsdp": 2}, 8), ({"data": 2, "tensor": 4}, 2), ({"data": 1, "tensor": 8}, 1)])
def test_a_batch_is_split_over_the_devices_of_the_data_and_fsdp_axes_only(sizes, shards):
  mesh = parallel.make_mesh(sizes)
  assert parallel.batch_shards(mesh, parallel.rules_for("fsdp")) == shards


def test_global_batch_places_each_example_once():
  mesh = parallel.make_mesh({"data": -1})
  rules = parallel.rules_for("data_parallel")
  local = {"image": np.arange(8 * 2, dtype=np.float32).reshape(8, 2), "label": np.arange(8)}
  batch = parallel.global_batch(local, mesh, rules)
  assert batch["image"].shape == (8, 2)
  assert len(batch["image"].addressable_shards) == 8
  np.testing.assert_array_equal(jax.device_get(batch["label"]), np.arange(8))


def test_unknown_strategy_is_rejected():
  with pytest.raises(ValueError, match="unknown sharding strategy 'zero3'"):
    parallel.rules_for("zero3")


def _pretend_two_processes():
  """Device -> process as if the first four devices of jax.devices() were process 0's."""
  order = {d.id: i for i, d in enumerate(jax.devices())}
  return lambda device: order[device.id] // 4


def test_process_major_mesh_gives_each_process_a_contiguous_block_of_the_global_batch():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
  sharding = parallel.batch_sharding(mesh, parallel.rules_for("fsdp"), ndim=1)
  parallel.check_process_rows(sharding, 16, process_of=_pretend_two_processes())


def test_a_mesh_that_interleaves_processes_is_refused_for_global_order():
  devices = np.array(jax.devices())[[0, 4, 1, 5, 2, 6, 3, 7]]
  mesh = jax.sharding.Mesh(devices.reshape(8, 1, 1), parallel.MESH_AXES)
  sharding = parallel.batch_sharding(mesh, parallel.rules_for("data_parallel"), ndim=1)
  with pytest.raises(ValueError, match=r"process 0's devices hold batch rows \[0, 1, 4, 5\].*"
                                       r"not the block \[0, 8\)"):
    parallel.check_process_rows(sharding, 16, process_of=_pretend_two_processes())
