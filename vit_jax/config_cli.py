"""Config mistakes on a command line, reported in one line before anything else runs.

ml_collections' config flags fail on a mistyped `--config.<key>=` deep inside flag parsing, with a
long traceback that ends in a bare key name. The commands check their arguments first: the config
file loads (it needs no jax) and every overridden key exists, or the one-line message says which key
is wrong and which ones are close to it. Once the flags are parsed (the --config.<key>=value
overrides applied), `exit_on_bad_values` rejects values that cannot work the same way.
"""
import importlib.util
import pathlib
import sys
from typing import Optional, Sequence

from vit_jax import configuration


def load_module(path: str):
  """The Python file at `path` run as a module (a config file, or a sweep file that is one too)."""
  if not pathlib.Path(path).is_file():
    raise ValueError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("cli_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config_file(spec: str):
  """Calls get_config of 'path/to/file.py[:argument]' like ml_collections' config flags do."""
  path, _, argument = spec.partition(":")
  module = load_module(path)
  return module.get_config(argument) if argument else module.get_config()


def _flag_values(argv: Sequence[str], name: str) -> list[tuple[str, str]]:
  """(flag, value) for --name... arguments, accepting '--flag=value' and '--flag value'."""
  found = []
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}"):
      flag, has_value, value = arg[2:].partition("=")
      if not has_value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        value = argv[i + 1]
      found.append((flag, value))
  return found


def config_error(argv: Sequence[str], name: str = "config") -> Optional[str]:
  """The first problem with the --config file and its --config.<key> overrides, or None."""
  specs = [value for flag, value in _flag_values(argv, name) if flag == name]
  if not specs:
    return None  # absl reports the missing required flag itself
  try:
    config = load_config_file(specs[-1])
  except (ValueError, TypeError, KeyError) as e:
    return f"--{name}={specs[-1]}: {e}"
  for flag, _ in _flag_values(argv, name + "."):
    dotted = flag[len(name) + 1:]
    node = config
    for part in dotted.split("."):
      if not hasattr(node, "keys") or part not in node:
        return f"--{flag}: " + configuration.unknown_key_message(config, dotted)
      node = node[part]
  return None


def exit_on_config_error(argv: Optional[Sequence[str]] = None, name: str = "config") -> None:
  """Exits with status 2 and the one-line message when the config arguments (default: sys.argv)
  cannot work."""
  error = config_error(sys.argv if argv is None else argv, name)
  if error:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)


def exit_on_bad_values(config, workdir: Optional[str] = None) -> None:
  """Exits with status 2 and one line naming the key when a config value (or the workdir) cannot
  work (configuration.check_values); call it after flag parsing, before anything is built."""
  try:
    configuration.check_values(config, workdir)
  except configuration.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
