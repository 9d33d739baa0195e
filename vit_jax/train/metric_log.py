"""Where training metrics go: TensorBoard event files and a JSON-lines file in the workdir."""
import json
import os
from typing import Mapping

from clu import metric_writers


class MetricLog:
  """Writes scalar metrics per step to `<workdir>/metrics.jsonl` and TensorBoard (main process only)."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._tensorboard = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {key: float(value) for key, value in scalars.items()}
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    self._tensorboard.write_scalars(int(step), values)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.flush()
      self._tensorboard.close()
