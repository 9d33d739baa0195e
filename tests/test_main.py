"""Specification of the command line: a few steps end to end, config typos and values that cannot
work rejected by name."""
import os
import pathlib
import sys

import pytest

from . import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_cli(*args, **env_vars):
  env = dict(os.environ, XLA_FLAGS=processes.xla_flags(2), **env_vars)
  return processes.run([sys.executable, "-m", "vit_jax.main", *args], cwd=ROOT, env=env)


def test_cli_trains_a_few_steps_and_reports_accuracy_last(tmp_path):
  proc = run_cli("--config=configs/default.py:pretrain", f"--workdir={tmp_path}",
                 "--config.model_name=ViT-micro/4", "--config.train.epochs=0",
                 "--config.train.steps=3", "--config.optim.warmup_steps=1", "--config.batch_size=16",
                 "--config.train.log_every=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith("final test accuracy: 0.")
  assert "mesh {'data': 2, 'fsdp': 1, 'tensor': 1}" in proc.stdout
  assert (tmp_path / "checkpoints" / "3").is_dir()


def test_unknown_config_key_is_an_error_that_names_it(tmp_path):
  proc = run_cli("--config=configs/default.py:pretrain", f"--workdir={tmp_path}",
                 "--config.bath_size=3")
  assert proc.returncode != 0
  assert "bath_size" in proc.stderr


def test_unknown_config_argument_is_an_error(tmp_path):
  proc = run_cli("--config=configs/default.py:pretrian", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  assert "pretrian" in proc.stderr


@pytest.mark.parametrize("workdir, flag, expected", [
    ("~/run", "--config.train.log_every=0", "error: config.train.log_every=0: steps between"),
    ("~/a_file", "--config.batch_size=16", "error: workdir '{home}/a_file' is a file"),
    ("~/run", "--config.init_from=~/missing", "error: config.init_from='{home}/missing' does not"),
])
def test_a_value_that_cannot_work_stops_the_command_in_one_line_before_jax(
    tmp_path, workdir, flag, expected):
  (tmp_path / "a_file").write_text("not a workdir")
  proc = run_cli("--config=configs/default.py:pretrain", f"--workdir={workdir}", flag,
                 HOME=str(tmp_path))  # `~` in --workdir and path keys means HOME.
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = proc.stderr.strip().splitlines()  # One line, no traceback.
  assert line.startswith(expected.format(home=tmp_path))
  assert not (tmp_path / "run").exists() and (tmp_path / "a_file").read_text() == "not a workdir"
