"""Loading a sweep file: a config file whose `get_sweep()` lists the trials as override dicts.

Every override is checked against the config of `get_config()` before anything runs: a key the
config lacks, or a value its field cannot take, stops the sweep in one line naming the trial.
`get_sweep` takes the ':argument' of `file.py:argument` when it has a parameter, as get_config does.
"""
import copy
import dataclasses
import inspect
from typing import Any

import ml_collections

from vit_jax import config_cli, configuration
from vit_jax.sweep import names


class SweepError(ValueError):
  """A sweep file that cannot run; the message names the trial and the key."""


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str            # its directory in the sweep's workdir (see names.py)
  overrides: dict      # dotted config key -> value, in the order the sweep file gives them


@dataclasses.dataclass(frozen=True)
class Sweep:
  spec: str                          # 'path/to/sweep.py[:argument]', as given
  config: ml_collections.ConfigDict  # get_config()'s config, without overrides
  trials: list

  @property
  def swept_keys(self) -> list[str]:
    """Every key some trial overrides, in first-seen order."""
    return list(dict.fromkeys(key for trial in self.trials for key in trial.overrides))

  @property
  def varying_keys(self) -> list[str]:
    """The swept keys whose value differs between trials (the ones a plot can have on its x axis)."""
    return [key for key in self.swept_keys
            if len({repr(trial.overrides.get(key)) for trial in self.trials}) > 1]


def _call(function, argument: str):
  takes_argument = bool(inspect.signature(function).parameters)
  return function(argument) if argument and takes_argument else function()


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted `key` of config to value with the config's type checks; KeyError if it is unknown."""
  *parents, last = key.split(".")
  node = config
  for part in parents:
    if not hasattr(node, "keys") or part not in node:
      raise KeyError(key)
    node = node[part]
  if not hasattr(node, "keys") or last not in node:
    raise KeyError(key)
  node[last] = value


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict
                    ) -> ml_collections.ConfigDict:
  """A copy of config with the overrides set (KeyError naming an unknown key, TypeError for a
  value its field cannot take)."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    _set(config, key, value)
  return config


def load(spec: str) -> Sweep:
  """Loads 'path/to/sweep.py[:argument]' and checks every trial's overrides (SweepError)."""
  path, _, argument = spec.partition(":")
  try:
    module = config_cli.load_module(path)
  except ValueError as e:
    raise SweepError(f"--config={spec}: {e}") from None
  for function in ("get_config", "get_sweep"):
    if not callable(getattr(module, function, None)):
      raise SweepError(f"{path} has no {function}(): a sweep file defines get_config() (the base "
                       "config) and get_sweep() (a list of override dicts, see vit_jax/sweep/space.py)")
  try:
    config = _call(module.get_config, argument)
    overrides = _call(module.get_sweep, argument)
  except (ValueError, TypeError, KeyError) as e:
    raise SweepError(f"--config={spec}: {e}") from None
  if not isinstance(overrides, (list, tuple)) or not overrides or not all(
      isinstance(trial, dict) for trial in overrides):
    raise SweepError(f"{path}: get_sweep() must return a non-empty list of dicts of overrides, "
                     f"got {type(overrides).__name__}")
  for i, trial in enumerate(overrides):
    if trial in overrides[:i]:
      raise SweepError(f"{path}: trials {overrides.index(trial) + 1} and {i + 1} have the same "
                       f"overrides {trial}: remove one of them")
  trials = [Trial(name, dict(trial)) for name, trial in zip(names.trial_names(overrides), overrides)]
  for trial in trials:
    trial_config = copy.deepcopy(config)
    for key, value in trial.overrides.items():
      try:
        _set(trial_config, key, value)
      except KeyError:
        raise SweepError(f"trial {trial.name}: " + configuration.unknown_key_message(config, key)
                         ) from None
      except (TypeError, ValueError) as e:
        raise SweepError(f"trial {trial.name}: config.{key}={value!r} does not fit the config: {e}"
                         ) from None
  return Sweep(spec, config, trials)
