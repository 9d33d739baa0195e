"""Specification of a trial's command line: the trainer with the sweep file as its config, the
trial's directory as its workdir, and overrides that ml_collections' config flags parse back to the
very values the sweep gave."""
import pathlib
import shlex
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from vit_jax.sweep import commands, sweep_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = f"{ROOT}/configs/default.py:pretrain"

# One override of each kind a config holds, with values that a careless formatting would change.
OVERRIDES = {
    "optim.learning_rate": 3e-05,              # float in exponent form
    "optim.end_learning_rate": 1,              # an int for a float field
    "optim.weight_decay": -0.1,                # negative
    "batch_size": 64,                          # int
    "data.download": True,                     # bool
    "model.token_head": False,                 # bool placeholder (None in the config)
    "model.dropout_rate": 0.1,                 # float placeholder
    "data.name": "1e-3",                       # a string that looks like a number
    "data.pp_train": "decode|inception_crop(16, area_min=0.8)|value_range(-1, 1)",  # spaces, quotes
    "optim.lr_mults": ("head/.*=10", "embedding/.*=0.5"),  # tuple of strings
    "optim.boundaries": (1 / 3, 2 / 3),        # tuple of floats, exact
    "optim.wd_mults": (),                      # empty tuple
}


def parsed_config(command, monkeypatch):
  """The config the trainer's flags (as vit_jax.main defines them) produce from the command."""
  argv = ["vit_jax.main", *command[3:]]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags finds the overrides in sys.argv
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True)
  flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
  flag_values(argv)
  return flag_values.config


def test_the_command_runs_the_trainer_on_the_sweep_file_in_the_trials_directory():
  command = commands.trial_command(CONFIG, "sweeps/lr=0.1", {"optim.learning_rate": 0.1})
  assert command == [sys.executable, "-m", "vit_jax.main", f"--config={CONFIG}",
                     "--workdir=sweeps/lr=0.1", "--config.optim.learning_rate=0.1"]


def test_every_override_parses_back_to_the_same_value_through_config_flags(monkeypatch):
  command = commands.trial_command(CONFIG, "/tmp/unused", OVERRIDES)
  parsed = parsed_config(command, monkeypatch)
  expected = sweep_file.apply_overrides(sweep_file.config_cli.load_config_file(CONFIG), OVERRIDES)
  for key, value in OVERRIDES.items():
    node_parsed, node_expected = parsed, expected
    for part in key.split("."):
      node_parsed, node_expected = node_parsed[part], node_expected[part]
    assert node_parsed == node_expected == value, key
    assert type(node_parsed) is type(node_expected), key
  assert parsed.to_dict() == expected.to_dict()  # nothing else changed


def test_a_printed_command_line_splits_back_into_the_same_arguments():
  command = commands.trial_command(CONFIG, "/tmp/a dir/trial", OVERRIDES)
  assert shlex.split(commands.shell_line(command)) == command


def test_none_cannot_be_given_on_a_command_line():
  with pytest.raises(ValueError, match=r"config.model.dropout_rate=None: a NoneType cannot be given"):
    commands.trial_command(CONFIG, "w", {"model.dropout_rate": None})
