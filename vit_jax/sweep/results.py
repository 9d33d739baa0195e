"""The sweep's results: one row per trial with its overrides, the final and best value of each
evaluation metric in its metrics.jsonl, its last step, wall time, status and error, written as
`results.csv` (for tools) and `results.md` (for people) in the sweep's workdir.

Evaluation metrics are the keys logged by config.evals' evaluators, '<evaluator>_<metric>' (e.g.
test_accuracy, test_loss); their example counts are left out. Best is the lowest value of a loss
and the highest of anything else (accuracies, precision, mAP).
"""
import csv
import dataclasses
import io
import math
import os
from typing import Any, Optional, Sequence

from vit_jax import whole_files
from vit_jax.sweep import trial_record
from vit_jax.sweep.sweep_file import Trial
from vit_jax.train import metric_rows

CSV, MARKDOWN = "results.csv", "results.md"
_COUNTS = ("examples", "patches")  # evaluator outputs that count what was evaluated


@dataclasses.dataclass
class TrialResult:
  name: str
  overrides: dict
  status: str                       # trial_record's: pending, running, finished, failed, interrupted
  final: dict                       # eval metric -> its value in the last row that has it
  best: dict                        # eval metric -> its best value over the run
  last_step: Optional[int]          # the highest step in metrics.jsonl
  wall_seconds: Optional[float]     # over every attempt
  error: str                        # the last line of a failed or interrupted trial's log


def lower_is_better(metric: str) -> bool:
  return "loss" in metric


def is_eval_metric(key: str, evaluators: Sequence[str]) -> bool:
  return any(key.startswith(f"{name}_") for name in evaluators) and not key.endswith(_COUNTS)


def trial_result(trial: Trial, root: str, evaluators: Sequence[str]) -> TrialResult:
  """What the trial's directory says about it (a trial not started yet is 'pending')."""
  directory = os.path.join(root, trial.name)
  record = trial_record.read(directory)
  rows = metric_rows.read(os.path.join(directory, metric_rows.FILE))
  final, best = {}, {}
  for row in rows:
    for key, value in row.items():
      if is_eval_metric(key, evaluators) and isinstance(value, (int, float)):
        final[key] = value
        if key not in best or math.isnan(best[key]):
          best[key] = value
        else:
          best[key] = (min if lower_is_better(key) else max)(best[key], value)
  steps = [row["step"] for row in rows if isinstance(row.get("step"), int)]
  status = trial_record.status(record)
  tail = (record or {}).get("error_tail") or []
  error = tail[-1] if tail and status in (trial_record.FAILED, trial_record.INTERRUPTED) else ""
  return TrialResult(trial.name, trial.overrides, status, final, best, max(steps, default=None),
                     (record or {}).get("wall_seconds"), error)


def gather(trials: Sequence[Trial], root: str, evaluators: Sequence[str]) -> list[TrialResult]:
  return [trial_result(trial, root, evaluators) for trial in trials]


def metric_names(results: Sequence[TrialResult]) -> list[str]:
  """The evaluation metrics any trial logged, sorted."""
  return sorted({key for result in results for key in result.final})


def columns(keys: Sequence[str], metrics: Sequence[str]) -> list[str]:
  return (["trial", "status", *keys]
          + [f"{kind}_{metric}" for metric in metrics for kind in ("final", "best")]
          + ["last_step", "wall_seconds", "error"])


def _row(result: TrialResult, keys: Sequence[str], metrics: Sequence[str]) -> list[Any]:
  return ([result.name, result.status, *(result.overrides.get(key, "") for key in keys)]
          + [kind.get(metric, "") for metric in metrics for kind in (result.final, result.best)]
          + [result.last_step if result.last_step is not None else "",
             round(result.wall_seconds, 1) if result.wall_seconds is not None else "", result.error])


def csv_text(results: Sequence[TrialResult], keys: Sequence[str]) -> str:
  metrics = metric_names(results)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(columns(keys, metrics))
  writer.writerows(_row(result, keys, metrics) for result in results)
  return out.getvalue()


def _cell(value: Any, rounded: bool) -> str:
  if rounded and isinstance(value, float):
    value = f"{value:.4g}"
  return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_text(results: Sequence[TrialResult], keys: Sequence[str], title: str = "") -> str:
  """A Markdown table, one row per trial; metrics to 4 significant digits, wall time in seconds."""
  metrics = metric_names(results)
  header = columns(keys, metrics)
  lines = [f"# {title}", ""] if title else []
  counts = {}
  for result in results:
    counts[result.status] = counts.get(result.status, 0) + 1
  lines += [f"{len(results)} trials: " + ", ".join(f"{n} {status}" for status, n in counts.items()),
            "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  rounded = range(2 + len(keys), len(header) - 1)  # metrics and wall time; overrides stay exact
  for result in results:
    row = _row(result, keys, metrics)
    row[header.index("wall_seconds")] = (f"{result.wall_seconds:.0f}"
                                         if result.wall_seconds is not None else "")
    lines.append("| " + " | ".join(_cell(value, i in rounded) for i, value in enumerate(row)) + " |")
  return "\n".join(lines) + "\n"


def write(root: str, results: Sequence[TrialResult], keys: Sequence[str], title: str = ""
          ) -> list[str]:
  """Writes results.csv and results.md into root (whole); returns their paths."""
  return [whole_files.write_text(os.path.join(root, CSV), csv_text(results, keys)),
          whole_files.write_text(os.path.join(root, MARKDOWN), markdown_text(results, keys, title))]
