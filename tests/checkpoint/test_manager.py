"""Checkpointer: bit-exact TrainState round trips, keep-last-K, resume, corrupt steps skipped loudly,
checksums verified, failed saves reported once, newer steps set aside."""
import errno
import glob
import logging
import os
import subprocess
import sys

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.serialization import serialization as orbax_serialization
import pytest

from vit_jax.checkpoint import Checkpointer, CheckpointSaveError
from vit_jax.checkpoint import checksums
from vit_jax.checkpoint.manager import restore_on_host
from vit_jax.train.state import TrainState

from .tiny import assert_trees_equal, init_params, make_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# After a failed (corrupt) read Orbax may leave an asyncio callback behind for a closed loop; harmless.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def abstract(state, sharding_for=None):
  """ShapeDtypeStructs of `state`, carrying sharding_for(leaf) (default: the leaf's own sharding)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=sharding_for(x) if sharding_for else x.sharding),
      state)


def saved(directory, steps, *, keep=3, save_every=1, compress=False):
  """Saves make_state(step) at each step and returns {step: state}."""
  states = {}
  with Checkpointer(directory, save_every=save_every, keep=keep, compress=compress) as ckpt:
    for step in steps:
      states[step] = make_state(step, seed=step)
      ckpt.save(step, states[step], {"data_position": step * 10, "config": {"model": "micro"}})
  return states


def test_round_trip_is_bit_exact(tmp_path):
  state = make_state()
  ckpt = Checkpointer(tmp_path, save_every=1, keep=2)
  assert ckpt.save(7, state, {"data_position": 123, "config": {"lr": 0.001}})
  ckpt.wait_until_finished()
  restored, extra = ckpt.restore(abstract_state=abstract(state))
  ckpt.close()
  assert isinstance(restored, TrainState)
  assert_trees_equal(restored, state)
  assert extra == {"data_position": 123, "config": {"lr": 0.001}}


def test_keeps_last_k_and_saves_every_n(tmp_path):
  saved(tmp_path / "keep", [1, 2, 3, 4], keep=2)
  assert Checkpointer(tmp_path / "keep", keep=2).all_steps() == [3, 4]
  saved(tmp_path / "every", [1, 2, 3, 4, 5, 6], keep=None, save_every=2)
  assert Checkpointer(tmp_path / "every").all_steps() == [2, 4, 6]


def test_resume_picks_the_latest_step(tmp_path):
  states = saved(tmp_path, [10, 20, 30])
  ckpt = Checkpointer(tmp_path)  # A fresh manager, as after a restart.
  assert ckpt.latest_step() == 30
  restored, extra = ckpt.restore(abstract_state=abstract(states[30]))
  assert_trees_equal(restored, states[30])
  assert extra["data_position"] == 300
  assert int(restored.step) == 30


def test_restore_without_target_gives_host_arrays(tmp_path):
  states = saved(tmp_path, [5])
  restored, _ = Checkpointer(tmp_path).restore(5)
  assert isinstance(restored["params"]["cls"], np.ndarray)
  np.testing.assert_array_equal(restored["params"]["cls"], states[5].params["cls"])


def _truncate_arrays(step_dir):
  for path in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(10)


def _delete_extra(step_dir):
  for path in glob.glob(os.path.join(step_dir, "extra", "*")):
    os.remove(path)


@pytest.mark.parametrize("damage", [_truncate_arrays, _delete_extra])
def test_corrupt_newest_step_is_skipped_loudly(tmp_path, caplog, damage):
  states = saved(tmp_path, [1, 2, 3])
  damage(str(tmp_path / "3"))
  ckpt = Checkpointer(tmp_path)
  with pytest.raises(RuntimeError, match="restoring checkpoint step 3 .* failed"):
    ckpt.restore(3, abstract_state=abstract(states[3]))  # An explicit step does not fall back.
  with caplog.at_level(logging.WARNING):
    restored, extra = ckpt.restore(abstract_state=abstract(states[3]))
  assert_trees_equal(restored, states[2])
  assert extra["data_position"] == 20
  assert "CHECKPOINT STEP 3 IN" in caplog.text and "corrupt or partial" in caplog.text
  # The bad step is kept aside for inspection and no longer blocks saving step 3 again.
  assert ckpt.all_steps() == [1, 2]
  assert glob.glob(str(tmp_path / "corrupt" / "3-*"))
  assert ckpt.save(3, states[3], {"data_position": 30})
  ckpt.wait_until_finished()
  assert ckpt.restore(abstract_state=abstract(states[3]))[1]["data_position"] == 30


def test_wrong_target_fails_without_discarding_checkpoints(tmp_path):
  saved(tmp_path, [1, 2])
  _, other_params = init_params("ViT-tiny/4")
  wrong = make_state()
  wrong = wrong.replace(params=jax.device_put(other_params))
  ckpt = Checkpointer(tmp_path)
  with pytest.raises(RuntimeError, match="restore target probably does not match"):
    ckpt.restore(abstract_state=abstract(wrong))
  assert ckpt.all_steps() == [1, 2]


def eight_way(x):
  """Shards the first axis that divides by 8 over the 8 fake devices, replicates the rest."""
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  axes = [i for i, n in enumerate(x.shape) if n % 8 == 0]
  spec = [None] * x.ndim
  if axes:
    spec[axes[0]] = "data"
  return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P(*spec))


def test_restore_onto_an_eight_device_mesh(tmp_path):
  states = saved(tmp_path, [4])
  target = abstract(states[4], eight_way)
  restored, _ = Checkpointer(tmp_path).restore(abstract_state=target)
  assert_trees_equal(restored, states[4])
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
    assert got.sharding == want.sharding
  kernel = restored.params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert len(kernel.addressable_shards) == 8 and kernel.addressable_shards[0].data.shape == (4, 64)


def test_extra_must_be_json(tmp_path):
  with Checkpointer(tmp_path) as ckpt, pytest.raises(TypeError, match="JSON-serializable"):
    ckpt.save(1, make_state(), {"position": object()})


NU_KERNEL = "opt_state/0/nu/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"


def flat(tree):
  return {checksums.leaf_path(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def flip_one_bit(step_dir):
  """Flips one bit in the middle of the largest array-data file of a saved step."""
  paths = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
  path = max(paths, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zstd"])
def test_a_flipped_bit_on_disk_never_reaches_training(tmp_path, caplog, compress):
  states = saved(tmp_path, [1, 2], compress=compress)
  flip_one_bit(str(tmp_path / "2"))
  # Raw chunks decode to a changed value (Orbax has no checksum of its own); a flip in a
  # zstd-compressed chunk either breaks decoding or changes a value. Either way step 2 is refused.
  ckpt = Checkpointer(tmp_path)
  with caplog.at_level(logging.WARNING):
    restored, extra = ckpt.restore(abstract_state=abstract(states[2], eight_way))
  assert_trees_equal(restored, states[1])
  assert extra["data_position"] == 10
  assert "CHECKPOINT STEP 2 IN" in caplog.text
  assert ckpt.all_steps() == [1]
  assert glob.glob(str(tmp_path / "corrupt" / "2-*" / "state"))


def rewrite_state_item(step_dir, state):
  """Replaces the arrays of a saved step through Orbax itself, so they decode without error; the
  step's stored checksums still describe the original arrays."""
  os.rename(os.path.join(step_dir, "state"), os.path.join(step_dir, "state.original"))
  writer = ocp.StandardCheckpointer()
  writer.save(os.path.join(step_dir, "state"), state)
  writer.wait_until_finished()
  writer.close()


def test_a_changed_weight_is_caught_by_its_checksum(tmp_path, caplog):
  states = saved(tmp_path, [1, 2])
  nu = flat(states[2])[NU_KERNEL]
  index = int(np.flatnonzero(nu.reshape(-1) > 0)[10])

  def negate_one_value(path, leaf):  # A negative Adam second moment.
    if checksums.leaf_path(path) != NU_KERNEL:
      return leaf
    changed = np.array(leaf)
    changed.reshape(-1)[index] *= -1
    return jax.device_put(changed)

  rewrite_state_item(str(tmp_path / "2"), jax.tree_util.tree_map_with_path(negate_one_value, states[2]))
  # Orbax alone reads the changed value without complaint: only the checksum catches it.
  changed = flat(restore_on_host(tmp_path / "2" / "state"))[NU_KERNEL]
  assert changed.reshape(-1)[index] == -nu.reshape(-1)[index] < 0
  ckpt = Checkpointer(tmp_path)
  with pytest.raises(RuntimeError, match=(
      rf"checkpoint step 2 in {tmp_path} failed its checksum check: 1 array\(s\) differ from what "
      rf"was saved: {NU_KERNEL}\.")):
    ckpt.restore(2)  # On the host: numpy fingerprints.
  with caplog.at_level(logging.WARNING):
    restored, extra = ckpt.restore(abstract_state=abstract(states[2], eight_way))  # On 8 devices.
  assert_trees_equal(restored, states[1])
  assert extra["data_position"] == 10
  assert "CHECKPOINT STEP 2 IN" in caplog.text and "failed its checksum check" in caplog.text
  assert ckpt.all_steps() == [1]
  assert glob.glob(str(tmp_path / "corrupt" / "2-*" / "state"))


def test_steps_saved_before_checksums_existed_still_restore(tmp_path, caplog):
  state = make_state(3, seed=3)
  old = ocp.CheckpointManager(  # Exactly what Checkpointer wrote before it stored checksums.
      str(tmp_path), options=ocp.CheckpointManagerOptions(create=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()})
  old.save(3, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave({"data_position": 30})))
  old.close()
  ckpt = Checkpointer(tmp_path)
  with caplog.at_level(logging.INFO):
    restored, extra = ckpt.restore(abstract_state=abstract(state))
  assert_trees_equal(restored, state)
  assert extra == {"data_position": 30}
  assert caplog.text.count("has no checksums") == 1
  on_host, _ = ckpt.restore(3)
  np.testing.assert_array_equal(on_host["params"]["cls"], state.params["cls"])


def assert_one_clear_full_disk_error(error, directory, captured):
  message = str(error)
  assert f"saving checkpoint step 2 to {directory} failed: the disk is full" in message
  assert "intact: steps [1]" in message
  assert message.endswith("then rerun the same command: training resumes from step 1.")
  assert error.errno == errno.ENOSPC and error.__cause__ is None  # No traceback of Orbax's threads.
  assert "No space left on device" in str(error.original)
  assert "Event loop is closed" not in captured and "Traceback" not in captured


@pytest.mark.parametrize("noticed_by", ["wait_until_finished", "the next save", "close"])
def test_a_full_disk_is_one_clear_error_and_older_steps_stay_intact(
    tmp_path, monkeypatch, capfd, caplog, noticed_by):
  # Filling a real disk needs a small filesystem, which needs root (test_a_really_full_disk does it
  # where it can); here Orbax's array write fails the way a full disk makes it fail.
  async def no_space(*args, **kwargs):
    del args, kwargs
    raise OSError(errno.ENOSPC, "No space left on device")

  state = make_state(1, seed=1)
  ckpt = Checkpointer(tmp_path, keep=1)  # keep=1: the failed save must not rotate step 1 away.
  ckpt.save(1, state, {"data_position": 10})
  ckpt.wait_until_finished()
  monkeypatch.setattr(orbax_serialization, "async_serialize_from_host", no_space)
  with caplog.at_level(logging.INFO), pytest.raises(CheckpointSaveError) as error:
    ckpt.save(2, make_state(2, seed=2), {"data_position": 20})
    if noticed_by == "wait_until_finished":
      ckpt.wait_until_finished()
    elif noticed_by == "the next save":
      ckpt.save(3, make_state(3, seed=3), {"data_position": 30})
    ckpt.close()
  ckpt.close()  # Reported once: closing again is quiet.
  monkeypatch.undo()
  out, err = capfd.readouterr()
  assert_one_clear_full_disk_error(error.value, tmp_path, out + err + caplog.text)
  restored, extra = Checkpointer(tmp_path).restore(abstract_state=abstract(state))
  assert_trees_equal(restored, state)
  assert extra["data_position"] == 10


def test_leaving_the_with_block_by_an_error_finishes_the_save_quietly(tmp_path):
  script = f"""
import sys
sys.path.insert(0, {str(os.path.dirname(__file__))!r})
from tiny import make_state
from vit_jax.checkpoint import Checkpointer
with Checkpointer({str(tmp_path)!r}) as ckpt:
  ckpt.save(1, make_state(1), {{}})
  raise ValueError("loss is nan at step 1")
"""
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                       check=False)
  assert run.returncode == 1
  assert run.stderr.rstrip().endswith("ValueError: loss is nan at step 1")
  assert "Event loop is closed" not in run.stderr
  assert Checkpointer(tmp_path).all_steps() == [1]  # The save in flight was completed, not lost.


def test_an_error_in_the_with_block_is_not_replaced_by_a_failed_save(tmp_path, monkeypatch, caplog):
  async def no_space(*args, **kwargs):
    del args, kwargs
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(orbax_serialization, "async_serialize_from_host", no_space)
  with pytest.raises(ValueError, match="loss is nan"), Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, make_state(1), {})
    raise ValueError("loss is nan")
  assert f"saving checkpoint step 1 to {tmp_path} failed: the disk is full" in caplog.text


def test_a_really_full_disk(tmp_path, capfd, caplog):
  state = make_state(1, seed=1)
  with Checkpointer(tmp_path / "probe") as probe:
    probe.save(1, state, {})
  step_bytes = sum(-(-os.path.getsize(os.path.join(root, name)) // 4096) * 4096
                   for root, _, names in os.walk(tmp_path / "probe" / "1") for name in names)
  small = tmp_path / "small"
  small.mkdir()
  mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={step_bytes * 3 // 2}", "tmpfs",
                          str(small)], capture_output=True, text=True, check=False)
  if mount.returncode:
    pytest.skip(f"cannot mount a small filesystem here ({mount.stderr.strip()}); "
                "test_a_full_disk_is_one_clear_error_and_older_steps_stay_intact covers it")
  try:
    ckpt = Checkpointer(small, keep=1)
    ckpt.save(1, state, {"data_position": 10})
    ckpt.wait_until_finished()
    with caplog.at_level(logging.INFO), pytest.raises(CheckpointSaveError) as error:
      ckpt.save(2, make_state(2, seed=2), {"data_position": 20})
      ckpt.close()
    ckpt.close()
    out, err = capfd.readouterr()
    assert_one_clear_full_disk_error(error.value, small, out + err + caplog.text)
    restored, _ = Checkpointer(small).restore(abstract_state=abstract(state))
    assert_trees_equal(restored, state)
  finally:
    subprocess.run(["umount", "-l", str(small)], check=False)


def test_set_aside_newer_than_lets_training_continue_from_an_earlier_step(tmp_path, caplog):
  states = saved(tmp_path, [1, 2, 3, 4], keep=3)
  ckpt = Checkpointer(tmp_path, keep=3)
  with pytest.raises(ValueError, match=r"step 1 is not a saved checkpoint .* saved steps are \[2, 3, 4\]"):
    ckpt.set_aside_newer_than(1)  # Rotated away already: a typo must not set every step aside.
  with caplog.at_level(logging.WARNING):
    assert ckpt.set_aside_newer_than(2) == [3, 4]
  assert f"Moved checkpoint step 4 (newer than the restore step 2) to {tmp_path}/set_aside/4-" in caplog.text
  assert ckpt.all_steps() == [2]
  for step in (3, 4):  # Kept, not deleted.
    assert len(glob.glob(str(tmp_path / "set_aside" / f"{step}-*" / "state"))) == 1
  restored, _ = ckpt.restore(abstract_state=abstract(states[2]))
  assert_trees_equal(restored, states[2])
  again = {step: make_state(step, seed=100 + step) for step in (3, 4, 5)}
  for step, state in again.items():
    assert ckpt.save(step, state, {"data_position": step})
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [3, 4, 5]
  assert len(glob.glob(str(tmp_path / "set_aside" / "*" / "state"))) == 2
  assert_trees_equal(ckpt.restore(abstract_state=abstract(again[5]))[0], again[5])
  ckpt.close()


def step_bytes(directory, step):
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(os.path.join(directory, str(step))) for name in names)


def test_arrays_are_written_uncompressed_unless_asked(tmp_path):
  """Float weights barely compress and zstd costs the write its CPU time; all-zero arrays show which
  form was written. Both forms restore."""
  zeros = {"w": jax.device_put(np.zeros((1024, 1024), np.float32))}  # 4 MiB
  for compress in (False, True):
    with Checkpointer(tmp_path / str(compress), compress=compress) as ckpt:
      ckpt.save(1, zeros)
    with Checkpointer(tmp_path / str(compress)) as ckpt:
      on_host, _ = ckpt.restore(1)
    np.testing.assert_array_equal(on_host["w"], zeros["w"])
  assert step_bytes(tmp_path / "False", 1) > 4 * 2**20
  assert step_bytes(tmp_path / "True", 1) < 2**20
