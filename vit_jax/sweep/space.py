"""Building a sweep's list of trials: `axis` varies one config key, `product` crosses sweeps and
`zipped` pairs them element by element, each trial a dict of overrides keyed by dotted config paths.

  def get_sweep():
    return product(axis("optim.weight_decay", [0.0, 0.1]),
                   zipped(axis("optim.learning_rate", [1e-3, 3e-3]), axis("train.epochs", [30.0, 60.0])))
"""
import itertools
from typing import Any, Iterable, Sequence

Overrides = dict[str, Any]


def axis(key: str, values: Iterable[Any]) -> list[Overrides]:
  """One trial per value of the dotted config key `key`, e.g. axis("optim.learning_rate", [1e-3, 3e-3])."""
  if not isinstance(key, str) or not key:
    raise ValueError(f"axis key {key!r}: give a dotted config path such as 'optim.learning_rate'")
  if isinstance(values, (str, bytes, dict)):
    raise ValueError(f"axis({key!r}, {values!r}): give a list of values, e.g. [{values!r}]")
  trials = [{key: value} for value in values]
  if not trials:
    raise ValueError(f"axis({key!r}) has no values: give at least one")
  return trials


def _merged(parts: Sequence[Overrides], what: str) -> Overrides:
  merged: Overrides = {}
  for part in parts:
    for key, value in part.items():
      if key in merged:
        raise ValueError(f"{what}: config key {key!r} is swept by two of its factors; "
                         "sweep each key in one factor only")
      merged[key] = value
  return merged


def product(*sweeps: Sequence[Overrides]) -> list[Overrides]:
  """Every combination of one trial from each sweep (the first sweep varies slowest), merged."""
  return [_merged(parts, "product") for parts in itertools.product(*sweeps)]


def zipped(*sweeps: Sequence[Overrides]) -> list[Overrides]:
  """The i-th trials of all sweeps merged into one, for sweeps of equal length."""
  lengths = [len(sweep) for sweep in sweeps]
  if len(set(lengths)) > 1:
    raise ValueError(f"zipped needs sweeps of equal length, got lengths {lengths}")
  return [_merged(parts, "zipped") for parts in zip(*sweeps)]
