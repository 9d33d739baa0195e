"""restore_params: params only, as host numpy, from a workdir, checkpoint dir, step dir or npz."""
import shutil

import numpy as np
import pytest

from vit_jax.checkpoint import Checkpointer, checkpoint_directory, restore_params
from vit_jax.checkpoint import naming

from .tiny import assert_trees_equal, make_state

# After a failed (corrupt) read Orbax may leave an asyncio callback behind for a closed loop; harmless.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training workdir with checkpoints at steps 1 and 2 (different params)."""
  workdir = tmp_path_factory.mktemp("run")
  with Checkpointer(checkpoint_directory(workdir)) as ckpt:
    for step in (1, 2):
      ckpt.save(step, make_state(step, seed=step), {"data_position": step})
  return workdir


def test_from_workdir_checkpoint_dir_and_step_dir(workdir):
  want = make_state(2, seed=2).params
  for path in (workdir, checkpoint_directory(workdir), f"{checkpoint_directory(workdir)}/2"):
    params = restore_params(path)
    assert isinstance(params["cls"], np.ndarray)
    assert_trees_equal(params, want)
  assert_trees_equal(restore_params(f"{checkpoint_directory(workdir)}/1"), make_state(1, seed=1).params)


def test_from_npz(tmp_path):
  params = make_state().params
  np.savez(tmp_path / "p.npz", **naming.flatten(params))
  assert_trees_equal(restore_params(tmp_path / "p.npz"), params)


def test_skips_a_corrupt_newest_step(workdir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / "2" / "state" / "d")
  assert_trees_equal(restore_params(copy), make_state(1, seed=1).params)


def test_nothing_there_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint at"):
    restore_params(tmp_path / "absent")
  with pytest.raises(FileNotFoundError, match="no complete Orbax checkpoint step"):
    restore_params(tmp_path)
