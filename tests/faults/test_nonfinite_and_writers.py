"""Faults inside one process: NaN in the middle of a run, a second writer, an earlier restore step.

NaN is injected the way it reaches real runs, through the data: the batch of one chosen step has
NaN pixels, so the loss, the gradient and (without skipping) the updated weights turn non-finite.
Checkpoints are due every 2 steps and metrics every 3, so a NaN can reach a save before any log.
The runs share two programs (with and without skipping), so that each compiles once.
"""
import importlib.util
import json
import os
import pathlib
import re
import sys

import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax.data import pipeline
from vit_jax.train import loop

from .. import processes

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def config(steps=6, **optim):
  spec = importlib.util.spec_from_file_location("default_config", CONFIGS / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("pretrain")
  config.model_name = "ViT-micro/4"
  config.batch_size, config.eval_batch_size = 16, 512
  config.train.update(epochs=0.0, steps=steps, log_every=3, checkpoint_every=2, keep_checkpoints=3)
  config.optim.update(warmup_steps=1, grad_clip_norm=0.0)  # Clipping would only rescale a NaN.
  config.optim.update(optim)
  return config


class _Poisoned:
  """The real train batches, with NaN images at the given (1-based) steps."""

  def __init__(self, batches, nan_steps, first_step):
    self._batches, self._nan_steps, self._step = batches, set(nan_steps), first_step

  @property
  def skipped(self):
    return self._batches.skipped

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self._batches))
    self._step += 1
    if self._step in self._nan_steps:
      batch["image"] = np.full_like(batch["image"], np.nan)
    return batch


@pytest.fixture
def nan_at(monkeypatch):
  """nan_at(steps): the next runs' batches hold NaN images at those steps."""
  real = pipeline.train_batches

  def poison(steps):
    monkeypatch.setattr(pipeline, "train_batches", lambda *args, start_step=0, **kwargs: _Poisoned(
        real(*args, start_step=start_step, **kwargs), steps, start_step))
  return poison


def steps_in(workdir):
  return checkpoint.Checkpointer(workdir / "checkpoints").all_steps()


def restore(workdir, step=None):
  state, _ = checkpoint.Checkpointer(workdir / "checkpoints").restore(step)
  return state


def all_finite(tree):
  leaves = [leaf for leaf in _leaves(tree) if np.issubdtype(np.asarray(leaf).dtype, np.floating)]
  return all(np.all(np.isfinite(leaf)) for leaf in leaves)


def _leaves(tree):
  if isinstance(tree, dict):
    return [leaf for value in tree.values() for leaf in _leaves(value)]
  if isinstance(tree, (list, tuple)):
    return [leaf for value in tree for leaf in _leaves(value)]
  return [tree]


def test_a_nan_never_reaches_a_checkpoint_and_a_rerun_resumes_from_the_last_good_step(
    tmp_path, nan_at):
  nan_at({3})  # saves at 2 and 4, logs at 3: the weights are NaN from step 3 on
  with pytest.raises(FloatingPointError) as error:
    loop.train_and_evaluate(config(), str(tmp_path))
  message = str(error.value)
  assert "at step 3" in message and "the last good checkpoint is step 2" in message, message
  assert steps_in(tmp_path) == [2]
  assert all_finite(restore(tmp_path))
  nan_at(set())  # the data problem is gone (or the learning rate was lowered)
  result = loop.train_and_evaluate(config(), str(tmp_path))
  assert result["step"] == 6 and steps_in(tmp_path) == [2, 4, 6]
  assert all_finite(restore(tmp_path))


def test_a_nan_between_logs_is_caught_at_the_save(tmp_path, nan_at):
  nan_at({4})  # the first check after step 4 is its save (the next log is at step 6)
  with pytest.raises(FloatingPointError, match="holds NaN or Inf at step 4.*last good checkpoint is step 2"):
    loop.train_and_evaluate(config(), str(tmp_path))
  assert steps_in(tmp_path) == [2]


def test_skipped_nonfinite_steps_change_nothing_and_are_counted(tmp_path, nan_at):
  nan_at({2, 5})
  result = loop.train_and_evaluate(config(steps=6, skip_nonfinite=2), str(tmp_path))
  assert result["step"] == 6
  state = restore(tmp_path)
  assert all_finite(state)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  logged = {row["step"]: row for row in rows if "loss" in row}
  assert logged[3]["skipped_nonfinite_steps"] == 1 and logged[6]["skipped_nonfinite_steps"] == 2
  assert logged[6]["nonfinite_in_a_row"] == 0


def test_too_many_skipped_steps_in_a_row_stop_the_run(tmp_path, nan_at):
  nan_at({2, 3, 4, 5, 6})
  # Checked at the save of step 4 (the log of step 3 saw 2 in a row).
  with pytest.raises(FloatingPointError, match=r"3 steps in a row up to step 4 .*skip_nonfinite=3"):
    loop.train_and_evaluate(config(skip_nonfinite=3), str(tmp_path))
  assert all_finite(restore(tmp_path))  # what was saved meanwhile holds the weights of step 1


def test_restore_step_resumes_from_a_kept_step_and_sets_the_newer_ones_aside(tmp_path):
  straight = loop.train_and_evaluate(config(), str(tmp_path / "straight"))
  loop.train_and_evaluate(config(), str(tmp_path / "rewound"))
  with pytest.raises(ValueError, match=r"step 3 is not a saved checkpoint in .*; the saved steps are \[2, 4, 6\]"):
    loop.train_and_evaluate(config(), str(tmp_path / "rewound"), restore_step=3)
  assert steps_in(tmp_path / "rewound") == [2, 4, 6]  # a step that is not kept moves nothing
  again = loop.train_and_evaluate(config(), str(tmp_path / "rewound"), restore_step=2)
  assert again == straight
  assert steps_in(tmp_path / "rewound") == [2, 4, 6]
  set_aside = sorted(path.name.split("-")[0]
                     for path in (tmp_path / "rewound" / "checkpoints" / "set_aside").iterdir())
  assert set_aside == ["4", "6"]
  np.testing.assert_equal(restore(tmp_path / "rewound"), restore(tmp_path / "straight"))
  assert (tmp_path / "rewound" / "metrics_set_aside.jsonl").read_text()  # rows of 3-6, kept


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
  with checkpoint.workdir_lock.hold(str(tmp_path)):
    with pytest.raises(checkpoint.WorkdirLockError, match=r"process \d+ on host"):
      loop.train_and_evaluate(config(steps=2), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()  # it wrote nothing


def test_an_error_while_a_save_is_in_flight_stops_cleanly_and_keeps_that_save(tmp_path):
  # A learning rate of 1e30 turns the loss into NaN a few steps in, while the previous step's
  # asynchronous save is still being written (every step saves).
  env = dict(os.environ, XLA_FLAGS=processes.xla_flags(2))
  done = processes.run(
      [sys.executable, "-m", "vit_jax.main", "--config=configs/default.py:pretrain",
       f"--workdir={tmp_path}", "--config.model_name=ViT-micro/4", "--config.train.epochs=0",
       "--config.train.steps=20", "--config.optim.warmup_steps=1", "--config.batch_size=16",
       "--config.train.log_every=1", "--config.train.checkpoint_every=1",
       "--config.optim.learning_rate=1e30", "--config.optim.grad_clip_norm=0"], cwd=ROOT, env=env)
  assert done.returncode != 0
  last_good = re.search(r"FloatingPointError: .* the last good checkpoint is step (\d+)", done.stderr)
  assert last_good, done.stderr[-3000:]
  assert "Event loop is closed" not in done.stderr
  assert len(done.stderr.splitlines()) < 60, done.stderr[-3000:]  # the error, not pages of threads
  names = sorted(os.listdir(tmp_path / "checkpoints"))
  assert names[-1] == last_good.group(1) and not [n for n in names if "tmp" in n], names
