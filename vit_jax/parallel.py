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
        ("heads", None), ("kv", None), ("classes", None), ("conv_in", None), ("conv_out", None),
        ("layers", None)),
    # Parameters and optimizer state split over fsdp along their hidden (or conv output) dimension.
    "fsdp": (
        ("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("mlp", None),
        ("heads", None), ("kv", None), ("classes", None), ("conv_in", None), ("conv_out", "fsdp"),
        ("layers", None)),
    # FSDP, plus attention heads and MLP hidden units split over tensor.
    "fsdp_tensor": (
        ("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("mlp", "tensor"),
        ("heads", "tensor"), ("kv", None), ("classes", None), ("conv_in", None),
        ("conv_out", "fsdp"), ("layers", None)),
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


def fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh) -> PartitionSpec:
  """`spec` with every dimension that its mesh axes do not divide evenly left whole (None); `mesh`
  may be a Mesh or an AbstractMesh (inside jit)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    ways = math.prod(mesh.shape[name] for name in names)
    fitted.append(axes if ways and dim % ways == 0 else None)
  return PartitionSpec(*fitted)


def _fit(sharding: NamedSharding, shape: tuple[int, ...], mesh: Mesh, min_size: int) -> NamedSharding:
  """Replicates a tensor below min_size elements, and any dimension its mesh axes do not divide."""
  if math.prod(shape) < min_size:
    return replicated(mesh)
  return NamedSharding(mesh, fit_spec(sharding.spec, shape, mesh))


def param_shardings(boxed_params: Any, mesh: Mesh, rules, *, min_size: int = 0) -> Any:
  """Shardings of the parameters from their logical names. Tensors with fewer than min_size elements
  stay replicated (sharding them costs more in collectives than it saves), and so does any dimension
  that its mesh axes do not divide evenly."""
  shardings = logical_shardings(boxed_params, mesh, rules)
  return jax.tree.map(lambda leaf, sharding: _fit(sharding, leaf.shape, mesh, min_size),
                      nn.unbox(boxed_params), shardings)


def replicated_above(abstract_params: Any, shardings: Any, min_size: int) -> list[tuple[str, int]]:
  """(path, size) of every parameter with at least min_size elements that is fully replicated."""
  found = []
  for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                                    jax.tree.leaves(shardings)):
    size = math.prod(leaf.shape)
    if size >= min_size and sharding.is_fully_replicated and sharding.mesh.size > 1:
      found.append(("/".join(str(getattr(k, "key", k)) for k in path), size))
  return found


def batch_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """How a batch array of the given rank is laid out: leading axis over the batch mesh axes."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def batch_shards(mesh: Mesh, rules) -> int:
  """How many parts a batch's rows are split into (the devices along the batch mesh axes): a global
  batch size must be a multiple of it."""
  sharding = batch_sharding(mesh, rules, 1)
  return mesh.size // math.prod(sharding.shard_shape((mesh.size,)))


def check_process_rows(sharding: NamedSharding, batch_size: int, process_of=None) -> None:
  """Fails unless process p's devices hold rows [p * local, (p + 1) * local) of a global batch.

  make_array_from_process_local_data places each process's rows wherever its devices sit in the
  mesh; inputs that slice one global order (data.global_order) need that to be process-major.
  `process_of` maps a device to its process (default: device.process_index; for tests).
  """
  process_of = process_of or (lambda device: device.process_index)
  processes = sorted({process_of(d) for d in sharding.mesh.devices.flat})
  local = batch_size // len(processes)
  rows = {p: set() for p in processes}
  for device, index in sharding.devices_indices_map((batch_size,)).items():
    rows[process_of(device)].update(range(*index[0].indices(batch_size)))
  for p in processes:
    if rows[p] != set(range(p * local, (p + 1) * local)):
      raise ValueError(
          f"process {p}'s devices hold batch rows {sorted(rows[p])[:4]}..., not the block "
          f"[{p * local}, {(p + 1) * local}) that data.global_order gives it: build the mesh from "
          "jax.devices() in process order (parallel.make_mesh), or set data.global_order=False.")


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
