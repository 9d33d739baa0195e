"""Specification of config mistakes on the command line: one line that names the key and the closest
existing ones, before anything is built."""
import pathlib
import subprocess
import sys

import pytest

from vit_jax import config_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT = f"--config={ROOT}/configs/default.py:pretrain"


def test_valid_arguments_have_no_error():
  assert config_cli.config_error([DEFAULT, "--config.batch_size=8", "--config.optim.learning_rate",
                                  "0.1", "--workdir=/tmp/x"]) is None


@pytest.mark.parametrize("flag, expected", [
    ("--config.bath_size=3", "config.bath_size; did you mean config.batch_size"),
    ("--config.train.lerning_rate=3", "did you mean config.optim.learning_rate"),
    ("--config.model.skip_lam=2", "unknown config key config.model.skip_lam"),  # not a ViT field
])
def test_a_mistyped_key_names_itself_and_its_nearest_keys(flag, expected):
  assert expected in config_cli.config_error([DEFAULT, flag])


def test_a_family_config_exposes_its_own_model_fields():
  lvvit = f"--config={ROOT}/configs/lvvit.py:test"
  assert config_cli.config_error([lvvit, "--config.model.skip_lam=3.0"]) is None


def test_a_bad_config_argument_is_reported_by_the_config_file():
  error = config_cli.config_error([f"--config={ROOT}/configs/default.py:pretrian"])
  assert "takes 'pretrain' or 'finetune', got 'pretrian'" in error


def test_the_command_line_reports_a_typo_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "vit_jax.main", DEFAULT, f"--workdir={tmp_path}",
                         "--config.train.lerning_rate=0.1"], capture_output=True, text=True,
                        cwd=ROOT, timeout=600)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --config.train.lerning_rate: unknown config key config.train.lerning_rate; did you "
      "mean config.optim.learning_rate, config.optim.end_learning_rate, config.train.log_every?"]
