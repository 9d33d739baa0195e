"""The trainer command line of a trial, with each override written so that ml_collections' config
flags parse it back to the same value.

The config flags parse an override by the type of the field it sets: floats and ints by absl's
number parsers, booleans from 'true'/'false', strings as they are, tuples and dicts with
ast.literal_eval. So numbers are written with repr (exact for floats), booleans lower-case,
strings bare, and tuples, lists and dicts as Python literals. None cannot be written: a typed field
takes no 'None' from a command line.
"""
import shlex
import sys
from typing import Any, Optional, Sequence

TRAINER = "vit_jax.main"


def flag_value(key: str, value: Any) -> str:
  """The text after `--config.<key>=` that parses back to `value`."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return value
  if isinstance(value, (tuple, list, dict)):
    return repr(tuple(value) if isinstance(value, list) else value)
  raise ValueError(f"config.{key}={value!r}: a {type(value).__name__} cannot be given on a command "
                   "line; sweep a number, bool, string, tuple or dict")


def trial_command(config: str, workdir: str, overrides: dict, *,
                  python: Optional[str] = None) -> list[str]:
  """`python -m vit_jax.main --config=<config> --workdir=<workdir> --config.<key>=<value> ...`;
  `config` is the sweep file as given, with its ':argument'."""
  return [python or sys.executable, "-m", TRAINER, f"--config={config}", f"--workdir={workdir}",
          *(f"--config.{key}={flag_value(key, value)}" for key, value in overrides.items())]


def shell_line(command: Sequence[str]) -> str:
  """The command as one line a shell runs unchanged (each argument quoted where it needs to be)."""
  return shlex.join(command)
