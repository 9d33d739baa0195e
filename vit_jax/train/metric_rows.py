"""Reading a run's metrics.jsonl back (the trainer's MetricLog writes it), without jax or TensorFlow:
resumed runs, the sweep's results table and other readers see the same rows."""
import json
import os

FILE = "metrics.jsonl"


def read(path: str) -> list[dict]:
  """Every row of a metrics.jsonl file (empty when there is none); a line cut short by a kill is
  ignored."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows
