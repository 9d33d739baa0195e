"""Per-array fingerprints of a pytree, stored with each checkpoint step and verified on restore.

The fingerprint of an array is two uint32 sums over its bits read as unsigned words (uint8/16/32 by
itemsize, widened to uint32; bool as 0/1; 8-byte values as two words, low first; complex as its real
and imaginary parts), both wrapping mod 2**32:
  plain     sum(word[i])
  weighted  sum(word[i] * (i + 1))   with i the flat (row-major) index mod 2**32
A single flipped bit always changes the plain sum; a changed or moved word changes the weighted one
unless the change is a multiple of 2**32 (never for one bit, very rarely otherwise). Integer sums
are exact and order-free, so the result does not depend on sharding or device count, and
jax arrays are fingerprinted on device (one jitted reduction, arrays never gathered) with exactly the
values numpy gives for the same array on the host.
"""
from typing import Any, Mapping

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

VERSION = 1
_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32}
_MAX_NAMED = 5  # Mismatching paths named in an error.


class ChecksumMismatchError(ValueError):
  """Restored arrays differ from the fingerprints stored when they were saved (silent corruption)."""


def leaf_path(path: tuple[Any, ...]) -> str:
  """A jax key path as 'params/Transformer/encoder_norm/scale' (tuple indices as numbers)."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _words_numpy(x: np.ndarray) -> np.ndarray:
  if x.dtype == np.bool_:
    return x.astype(np.uint32)
  if np.issubdtype(x.dtype, np.complexfloating):
    return _words_numpy(np.stack([x.real, x.imag], axis=-1))
  x = np.ascontiguousarray(x).reshape(-1)
  if x.dtype.itemsize == 8:
    return x.view(np.uint32)  # Little-endian hosts: the low word first, as on device.
  return x.view(_WORDS[x.dtype.itemsize]).astype(np.uint32)


def numpy_fingerprint(x: Any) -> tuple[int, int]:
  """(plain, weighted) of a host array; equal to the device fingerprint of the same values."""
  x = np.asarray(x)
  if x.dtype.itemsize not in (1, 2, 4, 8) and x.dtype != np.bool_:
    raise TypeError(f"cannot fingerprint arrays of dtype {x.dtype}")
  words = _words_numpy(x).reshape(-1)
  weights = (np.arange(1, words.size + 1, dtype=np.uint64) & 0xFFFFFFFF).astype(np.uint32)
  return int(np.sum(words, dtype=np.uint32)), int(np.sum(words * weights, dtype=np.uint32))


def _words_device(x: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    return _words_device(jnp.stack([x.real, x.imag], axis=-1))
  if x.dtype.itemsize == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # Adds a minor axis of 2 words, low first.
  return jax.lax.bitcast_convert_type(x, _WORDS[x.dtype.itemsize]).astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
  """Row-major flat indices mod 2**32, built per axis (no reshape), so they shard like the array."""
  index, stride = jnp.zeros(shape, jnp.uint32), 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % 2**32)
    stride *= shape[axis]
  return index


@jax.jit
def _device_sums(leaves: list[jax.Array]) -> jax.Array:
  """(len(leaves), 2) uint32: the plain and weighted sums of each leaf. Compiled once per structure."""
  rows = []
  for x in leaves:
    words = _words_device(x)
    weights = _flat_index(words.shape) + jnp.uint32(1)
    rows.append(jnp.stack([jnp.sum(words, dtype=jnp.uint32),
                           jnp.sum(words * weights, dtype=jnp.uint32)]))
  return jnp.stack(rows) if rows else jnp.zeros((0, 2), jnp.uint32)


def _on_host(sums: jax.Array) -> np.ndarray:
  if not sums.is_fully_addressable:  # Several processes: the (n, 2) result is tiny.
    return np.asarray(multihost_utils.process_allgather(sums, tiled=True))
  return np.asarray(sums)


def fingerprints(tree: Any) -> dict[str, list[int]]:
  """{leaf path: [plain, weighted]} for every array leaf of `tree`.

  jax arrays are reduced on their own devices (grouped by device set, one jitted call each; every
  process of a multi-process job gets the same values); numpy arrays and scalars on the host.
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  result, on_device = {}, {}
  for path, leaf in flat:
    if isinstance(leaf, jax.Array):
      on_device.setdefault(frozenset(leaf.sharding.device_set), []).append((leaf_path(path), leaf))
    else:
      result[leaf_path(path)] = list(numpy_fingerprint(leaf))
  for group in on_device.values():
    sums = _on_host(_device_sums([leaf for _, leaf in group]))
    for (name, _), row in zip(group, sums):
      result[name] = [int(row[0]), int(row[1])]
  return {leaf_path(path): result[leaf_path(path)] for path, _ in flat}  # In tree order.


def record(tree: Any) -> dict[str, Any]:
  """The JSON-serializable record stored with a checkpoint step."""
  return {"version": VERSION, "arrays": fingerprints(tree)}


def verify(tree: Any, stored: Mapping[str, Any], where: str) -> None:
  """Raises ChecksumMismatchError naming `where` and the first differing arrays, if `tree` (as
  restored) does not have the fingerprints `stored` (a record() of what was saved)."""
  if stored.get("version") != VERSION:
    raise ChecksumMismatchError(f"{where}: unknown checksum record version {stored.get('version')}")
  want, got = stored["arrays"], fingerprints(tree)
  bad = [name for name in want if name in got and list(got[name]) != list(want[name])]
  missing = [name for name in want if name not in got]
  unexpected = [name for name in got if name not in want]
  if not (bad or missing or unexpected):
    return
  parts = []
  if bad:
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    parts.append(f"{len(bad)} array(s) differ from what was saved: "
                 f"{', '.join(bad[:_MAX_NAMED])}{more}")
  if missing or unexpected:
    parts.append(f"arrays not restored: {missing[:_MAX_NAMED]}; restored arrays that were not "
                 f"saved: {unexpected[:_MAX_NAMED]}")
  raise ChecksumMismatchError(
      f"{where} failed its checksum check: {'; '.join(parts)}. Its files were changed after the "
      "save (disk or copy corruption); use another step.")
