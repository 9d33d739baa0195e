"""Where training metrics go: TensorBoard event files and a JSON-lines file in the workdir.

A resumed run continues the same files: rows written after the step it resumes from (by a run that
died before its next checkpoint, or that --restore_step abandons) move to metrics_set_aside.jsonl,
and a row already written for a step (the final evaluation of a finished run that is started again)
is not written twice, so every step's rows appear once, however often the run is restarted.
"""
import json
import os
from typing import Mapping

from clu import metric_writers
from vit_jax import whole_files
from vit_jax.train import metric_rows


class MetricLog:
  """Writes scalar metrics per step to `<workdir>/metrics.jsonl` and TensorBoard (main process only)."""

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    """resume_step: the step the run restarts from; rows of later steps are removed."""
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, metric_rows.FILE)
    self.set_aside_path = os.path.join(workdir, "metrics_set_aside.jsonl")
    self._tensorboard = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._drop_rows_after(resume_step)
      self._written = {(row["step"], frozenset(row) - {"step"}) for row in self.rows()}
      self._tensorboard = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _drop_rows_after(self, step: int) -> None:
    rows = self.rows()
    kept = [row for row in rows if row["step"] <= step]
    if len(kept) == len(rows):
      return
    with open(self.set_aside_path, "a") as f:  # kept for inspection before they leave metrics.jsonl
      f.writelines(json.dumps(row) + "\n" for row in rows if row["step"] > step)
    # Whole: a crash leaves the old file or the new one.
    whole_files.write_text(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in kept))

  def rows(self) -> list[dict]:
    """Every row written so far (empty for a new workdir); a torn last line is ignored."""
    return metric_rows.read(self.jsonl_path)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {key: float(value) for key, value in scalars.items()}
    if (int(step), frozenset(values)) in self._written:
      return
    self._written.add((int(step), frozenset(values)))
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    self._tensorboard.write_scalars(int(step), values)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.flush()
      self._tensorboard.close()
