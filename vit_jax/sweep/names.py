"""Trial names: the directory of each trial in the sweep's workdir, read by people and by reruns.

A name lists the trial's overrides as `key=value` joined by commas, each key shortened to the
shortest ending of its dotted path that no other swept key shares (`optim.weight_decay=0.1` becomes
`weight_decay=0.1`). Characters other than letters, digits and `._+-` in values become `_`. A name
longer than MAX_LENGTH, or one that two trials would share, ends in a hash of the trial's overrides,
so the same overrides get the same name on every rerun.
"""
import hashlib
import json
import re
from typing import Any, Sequence

MAX_LENGTH = 100
BASE = "base"  # the name of a trial without overrides
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Each dotted key -> its shortest ending (whole components) that no other key ends with."""
  keys = list(dict.fromkeys(keys))
  short = {}
  for key in keys:
    parts = key.split(".")
    for size in range(1, len(parts) + 1):
      ending = ".".join(parts[-size:])
      if not any(other != key and (other == ending or other.endswith("." + ending))
                 for other in keys):
        break
    short[key] = ending
  return short


def value_text(value: Any) -> str:
  """A value as it appears in a name: floats in their shortest form (1e-3 -> 0.001, 0.0 -> 0),
  booleans lower-case, tuples and lists joined with '_'."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    return format(value, "g")
  if isinstance(value, (tuple, list)):
    return "_".join(value_text(v) for v in value) or "empty"
  text = str(value)
  return _UNSAFE.sub("_", text) if text else "empty"


def overrides_hash(overrides: dict) -> str:
  """Eight hex digits that depend only on the overrides (their keys, order and values)."""
  canonical = json.dumps(list(overrides.items()), default=repr)
  return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def trial_names(trials: Sequence[dict]) -> list[str]:
  """One readable, filesystem-safe, unique name per trial (see the module docstring)."""
  short = short_keys([key for trial in trials for key in trial])
  names = []
  for trial in trials:
    name = ",".join(f"{short[key]}={value_text(value)}" for key, value in trial.items()) or BASE
    if len(name) > MAX_LENGTH:
      name = name[:MAX_LENGTH - 9] + "-" + overrides_hash(trial)
    names.append(name)
  counts = {name: names.count(name) for name in names}
  names = [name if counts[name] == 1 else f"{name}-{overrides_hash(trial)}"
           for name, trial in zip(names, trials)]
  for i, name in enumerate(names):
    if name in names[:i]:
      raise ValueError(f"trials {names.index(name) + 1} and {i + 1} of the sweep have the same "
                       f"overrides ({name}): remove one of them")
  return names
