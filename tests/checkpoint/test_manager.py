"""Checkpointer: bit-exact TrainState round trips, keep-last-K, resume, corrupt steps skipped loudly."""
import glob
import logging
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from vit_jax.checkpoint import Checkpointer
from vit_jax.train.state import TrainState

from .tiny import assert_trees_equal, init_params, make_state

# After a failed (corrupt) read Orbax may leave an asyncio callback behind for a closed loop; harmless.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def abstract(state, sharding_for=None):
  """ShapeDtypeStructs of `state`, carrying sharding_for(leaf) (default: the leaf's own sharding)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=sharding_for(x) if sharding_for else x.sharding),
      state)


def saved(directory, steps, *, keep=3, save_every=1):
  """Saves make_state(step) at each step and returns {step: state}."""
  states = {}
  with Checkpointer(directory, save_every=save_every, keep=keep) as ckpt:
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


def test_restore_onto_an_eight_device_mesh(tmp_path):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  states = saved(tmp_path, [4])
  mesh = Mesh(np.array(jax.devices()), ("data",))

  def sharding_for(x):  # Shard the first axis that divides by 8, replicate the rest.
    axes = [i for i, n in enumerate(x.shape) if n % 8 == 0]
    spec = [None] * x.ndim
    if axes:
      spec[axes[0]] = "data"
    return NamedSharding(mesh, P(*spec))

  target = abstract(states[4], sharding_for)
  restored, _ = Checkpointer(tmp_path).restore(abstract_state=target)
  assert_trees_equal(restored, states[4])
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
    assert got.sharding == want.sharding
  kernel = restored.params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert len(kernel.addressable_shards) == 8 and kernel.addressable_shards[0].data.shape == (4, 64)


def test_extra_must_be_json(tmp_path):
  with Checkpointer(tmp_path) as ckpt, pytest.raises(TypeError, match="JSON-serializable"):
    ckpt.save(1, make_state(), {"position": object()})
