"""What `python -m vit_jax.evaluate` reports, from one pass's sums and rows: metrics.json, the
confusion-matrix PNG, and the summary it prints. Host-side: the pass itself is the command's.

metrics.json holds: the examples counted (every real example once) and those that could not be
decoded; top-1 and top-5 accuracy and the mean loss; per class, its examples and accuracy (or, for
multi-label data, its positives and average precision, with precision@1 and mAP); the confusion
matrix (rows true, columns predicted) for up to plots.MAX_CLASSES classes; and, when asked, ReaL
accuracy and few-shot accuracies. NaN (a class without examples) is written as null.
"""
import json
import math
import os
from typing import Any, Optional

import numpy as np

from vit_jax import whole_files
from vit_jax.metrics import classification as metrics_lib
from vit_jax.evaluate import plots
from vit_jax.metrics import real_labels

METRICS = "metrics.json"


def _number(value: Any) -> Any:
  value = float(value)
  return None if math.isnan(value) else value


def classification(sums: dict[str, float], rows: dict[str, np.ndarray], names: list[str],
                   multi_label: bool) -> dict[str, Any]:
  """The metrics of one pass: sums of the eval step (correct, correct_top5, loss_sum, count) and
  rows ('prediction' (N,), 'label' (N,) or multi-hot (N, K), for multi-label also 'logits')."""
  count = sums["count"]
  if len(rows["prediction"]) != count:
    raise AssertionError(f"{len(rows['prediction'])} rows for {count} counted examples")
  result = {"examples": int(count), "accuracy": sums["correct"] / max(count, 1),
            "top5_accuracy": sums["correct_top5"] / max(count, 1),
            "loss": sums["loss_sum"] / max(count, 1)}
  num_classes = len(names)
  if multi_label:
    positives = (rows["label"] > 0).sum(axis=0)
    per_class = metrics_lib.per_class_average_precision(rows["logits"], rows["label"])
    present = per_class[~np.isnan(per_class)]
    result["precision_at_1"] = metrics_lib.precision_at_1(rows["logits"], rows["label"])
    result["mean_average_precision"] = float(present.mean()) if len(present) else None
    result["per_class"] = [
        {"class": k, "name": names[k], "positives": int(positives[k]),
         "average_precision": _number(per_class[k])} for k in range(num_classes)]
    return result
  examples, accuracy = metrics_lib.per_class_accuracy(rows["prediction"], rows["label"], num_classes)
  result["per_class"] = [{"class": k, "name": names[k], "examples": int(examples[k]),
                          "accuracy": _number(accuracy[k])} for k in range(num_classes)]
  if num_classes <= plots.MAX_CLASSES:
    result["confusion_matrix"] = metrics_lib.confusion_matrix(
        rows["prediction"], rows["label"], num_classes).tolist()
  return result


def real(rows: dict[str, np.ndarray], labels: real_labels.RealLabels, by: str) -> dict[str, Any]:
  """ReaL accuracy of the pass's top-1 predictions ('entry' rows: each example's labels entry)."""
  return {"labels": labels.path, "by": by,
          **real_labels.accuracy(rows["prediction"], rows["entry"], labels)}


def fewshot(accuracies: dict[int, list[float]], **settings) -> dict[str, Any]:
  """Few-shot accuracies: the mean over seeds and each seed's, per number of shots."""
  return {**settings, "accuracy": {f"{k}shot": float(np.mean(v)) for k, v in accuracies.items()},
          "per_seed": {f"{k}shot": list(v) for k, v in accuracies.items()}}


def write(output: str, metrics: dict[str, Any], names: list[str], title: str = "") -> list[str]:
  """Writes metrics.json (and the confusion matrix PNG when metrics hold one) into `output`;
  returns the paths written."""
  os.makedirs(output, exist_ok=True)
  written = []
  if "confusion_matrix" in metrics:
    written.append(plots.write_confusion(os.path.join(output, plots.CONFUSION_MATRIX),
                                         np.array(metrics["confusion_matrix"]), names, title))
  path = whole_files.write_text(os.path.join(output, METRICS), json.dumps(
      {**metrics, "files": [os.path.basename(p) for p in written]}, indent=1) + "\n")
  return [path] + written


def summary(metrics: dict[str, Any], what: str, worst: int = 3) -> list[str]:
  """The lines printed: overall figures, the weakest classes, ReaL and few-shot when present."""
  lines = [f"{what}: {metrics['examples']} examples"
           + (f" ({metrics['skipped']} undecodable, not counted)" if metrics.get("skipped") else "")
           + f", top-1 {metrics['accuracy']:.4f}, top-5 {metrics['top5_accuracy']:.4f}, "
           f"loss {metrics['loss']:.4f}"]
  if "mean_average_precision" in metrics:
    mean_ap = metrics["mean_average_precision"]
    lines.append(f"precision@1 {metrics['precision_at_1']:.4f}, mAP "
                 + (f"{mean_ap:.4f}" if mean_ap is not None else "n/a (no positives)"))
  else:
    scored = sorted((c for c in metrics["per_class"] if c["accuracy"] is not None),
                    key=lambda c: (c["accuracy"], c["class"]))
    if scored:
      lines.append("lowest per-class accuracy: " + ", ".join(
          f"{c['name']} {c['accuracy']:.3f} ({c['examples']})" for c in scored[:worst]))
  if "real" in metrics:
    r = metrics["real"]
    lines.append(f"ReaL accuracy {r['accuracy']:.4f} over {int(r['examples'])} examples "
                 f"({int(r['without_labels'])} without labels left out)")
  if "fewshot" in metrics:
    f = metrics["fewshot"]
    lines.append(f"few-shot ({f['seeds']} seeds, shots from {f['train_split']!r}): " + ", ".join(
        f"{k.replace('shot', '-shot')} {v:.4f}" for k, v in f["accuracy"].items()))
  return lines


def default_output(workdir: Optional[str], split: str, step: Optional[str] = None) -> Optional[str]:
  """<workdir>/eval/<split> (split names made file-safe; a step directory adds _step<N>)."""
  if workdir is None:
    return None
  safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in split).strip("_")
  return os.path.join(workdir, "eval", safe + (f"_step{step}" if step else ""))
