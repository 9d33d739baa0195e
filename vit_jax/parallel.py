"""The device mesh and the logical-axis rules: the single source of truth for how arrays are sharded.

Every parameter and key activation carries logical axis names (batch, length, embed, mlp, heads, kv,
classes). One rules table per strategy maps them onto the mesh axes (data, fsdp, tensor), so data
parallel, FSDP and FSDP + tensor parallel are configurations of the same code.
"""
import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    # Parameters replicated; the batch split over every device.
    "data_parallel": (
        ("batch", ("data", "fsdp")), ("length", None), ("embed", None), ("mlp", None),
        ("heads", None), ("kv", None), ("classes", None)),
    # Parameters and optimizer state split over fsdp along their hidden dimension.
    "fsdp": (
        ("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("mlp", None),
        ("heads", None), ("kv", None), ("classes", None)),
    # FSDP, plus attention heads and MLP hidden units split over tensor.
    "fsdp_tensor": (
        ("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("mlp", "tensor"),
        ("heads", "tensor"), ("kv", None), ("classes", None)),
}


def rules_for(strategy: str) -> tuple[tuple[str, Any], ...]:
  if strategy not in RULES:
    raise ValueError(f"unknown sharding strategy {strategy!r}; choose one of {sorted(RULES)}")
  return RULES[strategy]


def mesh_shape(axis_sizes: dict[str, int], device_count: int) -> tuple[int, ...]:
  """Resolves {'data': -1, 'fsdp': 1, 'tensor': 1} against the device count (one axis may be -1)."""
  unknown = sorted(set(axis_sizes) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}")
  sizes = [int(axis_sizes.get(axis, 1)) for axis in MESH_AXES]
  fill = [i for i, size in enumerate(sizes) if size == -1]
  if len(fill) > 1:
    raise ValueError(f"only one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(size for size in sizes if size != -1)
  if fill:
    if device_count % known:
      raise ValueError(
          f"cannot fill the mesh: {device_count} devices are not divisible by the fixed axes {known}")
    sizes[fill[0]] = device_count // known
  if math.prod(sizes) != device_count:
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
        f"{device_count} are available; set one axis to -1 to fill the rest")
  return tuple(sizes)


def make_mesh(axis_sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all (global) devices with axes (data, fsdp, tensor), Auto-typed for GSPMD."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axis_sizes, len(devices))
  device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree whose leaves carry logical axis names (unnamed leaves replicate)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """How a batch array of the given rank is laid out: leading axis over the batch mesh axes."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activate(mesh: Mesh, rules) -> Iterator[None]:
  """Makes the mesh and the rules current, so logical constraints inside the model take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh, rules) -> dict[str, jax.Array]:
  """Turns this process's share of a batch into global jax.Arrays sharded on the training mesh."""
  return {
      key: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, value.ndim), value)
      for key, value in local_batch.items()
  }
