"""Specification of the command line: a few steps end to end, config typos rejected by name."""
import os
import pathlib
import sys

from . import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_cli(*args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
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
