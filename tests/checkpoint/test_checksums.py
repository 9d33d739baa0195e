"""checksums: exact per-array fingerprints, equal on device (any sharding) and on the host."""
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.checkpoint import checksums

DTYPES = [np.float32, jnp.bfloat16, np.float16, np.int32, np.uint32, np.int8, np.uint8, np.bool_]


def values(dtype, shape=(16, 24), seed=0):
  rng = np.random.default_rng(seed)
  if dtype == np.bool_:
    return rng.random(shape) < 0.5
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
  return (rng.normal(size=shape) * 100).astype(dtype)


def placements():
  """Unsharded, sharded over the 8 fake devices on either axis, over a 2x4 mesh, and replicated."""
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  line = Mesh(np.array(jax.devices()), ("d",))
  grid = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
  return {
      "one device": None,
      "rows over 8": NamedSharding(line, P("d", None)),
      "columns over 8": NamedSharding(line, P(None, "d")),
      "2x4 mesh": NamedSharding(grid, P("a", "b")),
      "replicated": NamedSharding(line, P()),
  }


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_device_and_numpy_fingerprints_agree_for_every_sharding(dtype):
  host = values(dtype)
  want = list(checksums.numpy_fingerprint(host))
  for name, sharding in placements().items():
    array = jax.device_put(host, sharding) if sharding else jax.device_put(host)
    assert checksums.fingerprints({"x": array}) == {"x": want}, name
    assert checksums.fingerprints({"x": np.asarray(array)}) == {"x": want}, name


def test_scalars_and_mixed_trees_are_keyed_by_path():
  tree = {"step": jax.device_put(np.int32(7)), "opt": (np.float32(0.5), {"mu": values(np.float32)})}
  got = checksums.fingerprints(tree)
  assert list(got) == ["opt/0", "opt/1/mu", "step"]
  assert got["step"] == list(checksums.numpy_fingerprint(np.int32(7)))
  assert got["opt/0"] == list(checksums.numpy_fingerprint(np.float32(0.5)))


def test_one_flipped_bit_changes_the_plain_sum():
  x = values(np.float32)
  for flat_index, bit in [(0, 0), (100, 17), (383, 31)]:
    flipped = x.copy()
    flipped.view(np.uint32).reshape(-1)[flat_index] ^= np.uint32(1 << bit)
    assert checksums.numpy_fingerprint(flipped)[0] != checksums.numpy_fingerprint(x)[0]


def test_swapped_values_change_the_weighted_sum():
  x = values(np.float32)
  swapped = x.copy()
  swapped[0, 0], swapped[3, 5] = x[3, 5], x[0, 0]
  plain, weighted = checksums.numpy_fingerprint(swapped)
  assert plain == checksums.numpy_fingerprint(x)[0]
  assert weighted != checksums.numpy_fingerprint(x)[1]


def test_verify_names_the_changed_arrays():
  tree = {"params": {"a": values(np.float32), "b": values(np.int32)}, "nu": values(np.float32, seed=1)}
  stored = checksums.record(tree)
  checksums.verify(tree, stored, "step 3")  # Unchanged: no error.
  tree["nu"] = tree["nu"].copy()
  tree["nu"][2, 2] = -tree["nu"][2, 2]  # E.g. a negative Adam second moment.
  with pytest.raises(checksums.ChecksumMismatchError, match=r"step 3 failed its checksum check: "
                     r"1 array\(s\) differ from what was saved: nu\."):
    checksums.verify(tree, stored, "step 3")


def test_sharded_arrays_are_reduced_where_they_live():
  grid = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
  x = jax.device_put(values(np.float32, (64, 128)), NamedSharding(grid, P("a", "b")))
  compiled = checksums._device_sums.lower([x]).compile().as_text()  # pylint: disable=protected-access
  assert "all-reduce" in compiled and "all-gather" not in compiled
