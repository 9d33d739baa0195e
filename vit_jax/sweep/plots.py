"""The sweep's plots: for each evaluation metric and each swept key whose value varies, the final
metric of every finished trial against that key's value, one line per combination of the other
swept keys. Numbers go on a numeric axis (logarithmic when positive and spanning 100x or more),
anything else (strings, booleans, tuples) on a categorical one. matplotlib without pyplot: nothing
global is touched and no display is needed.
"""
import os
from typing import Any, Sequence

from matplotlib.figure import Figure

from vit_jax import whole_files
from vit_jax.sweep import names, results as results_lib, trial_record

DIRECTORY = "plots"
_LOG_SPAN = 100.0


def file_name(metric: str, key: str) -> str:
  return f"{metric}_vs_{key}.png"


def _numeric(values: Sequence[Any]) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def metric_figure(finished: Sequence[results_lib.TrialResult], metric: str, key: str,
                  others: Sequence[str]) -> Figure:
  """The final `metric` against `key`, a line per combination of the `others` keys' values."""
  short = names.short_keys([key, *others])
  points = [(r.overrides.get(key), r) for r in finished if metric in r.final]
  numeric = _numeric([x for x, _ in points])
  categories = list(dict.fromkeys(names.value_text(x) for x, _ in points))
  lines: dict[str, list] = {}
  for x, result in points:
    label = ", ".join(f"{short[o]}={names.value_text(result.overrides.get(o))}" for o in others)
    position = x if numeric else categories.index(names.value_text(x))
    lines.setdefault(label, []).append((position, result.final[metric]))
  figure = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
  axes = figure.add_subplot()
  for label, line in lines.items():
    line.sort()
    axes.plot([p for p, _ in line], [v for _, v in line], marker="o", label=label or None)
  if numeric:
    xs = [x for x, _ in points]
    if min(xs) > 0 and max(xs) / min(xs) >= _LOG_SPAN:
      axes.set_xscale("log")
  else:
    axes.set_xticks(range(len(categories)), categories)
    axes.set_xlim(-0.5, len(categories) - 0.5)
  axes.set_xlabel(key)
  axes.set_ylabel(f"final {metric}")
  axes.set_title(f"{metric} vs {key} ({len(points)} finished trials)")
  axes.grid(alpha=0.3)
  if len(lines) > 1:
    axes.legend(fontsize=8, title=", ".join(short[o] for o in others), title_fontsize=8)
  return figure


def write(root: str, results: Sequence[results_lib.TrialResult], varying_keys: Sequence[str]
          ) -> list[str]:
  """Writes <root>/plots/<metric>_vs_<key>.png for every metric a finished trial logged and every
  varying key; returns the paths written."""
  finished = [r for r in results if r.status == trial_record.FINISHED]
  written = []
  for metric in results_lib.metric_names(finished):
    for key in varying_keys:
      others = [other for other in varying_keys if other != key]
      figure = metric_figure(finished, metric, key, others)
      path = os.path.join(root, DIRECTORY, file_name(metric, key))
      written.append(whole_files.write(path, lambda f, figure=figure: figure.savefig(f, format="png")))
  return written
