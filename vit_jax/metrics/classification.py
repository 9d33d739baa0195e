"""Classification metrics on the host: top-1 accuracy, per-class accuracy and the confusion matrix,
and precision@1 and (per-class) average precision for multi-label data.

All take per-example scores (logits, B x K) or predicted classes (B,), labels (int (B,) or multi-hot
(B, K)) and an optional mask (1 real example, 0 padding), so padded eval batches count every real
example exactly once. `Metrics` accumulates them over an eval pass; mean average precision needs
every score of the pass, so it keeps them (N x K float32 on the host: subsample the eval split for
very many classes).
"""
from typing import Dict, List, Optional

import numpy as np


def _mask(mask: Optional[np.ndarray], n: int) -> np.ndarray:
  return np.ones(n, bool) if mask is None else np.asarray(mask) > 0


def top1_accuracy(scores: np.ndarray, labels: np.ndarray,
                  mask: Optional[np.ndarray] = None) -> float:
  """Fraction of (unmasked) examples whose top class is the label (any positive, for multi-hot)."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  keep = _mask(mask, len(scores))
  top = np.argmax(scores[keep], axis=-1)
  if labels.ndim == 2:
    hits = np.take_along_axis(labels[keep], top[:, None], axis=-1)[:, 0] > 0
  else:
    hits = top == labels[keep]
  return float(hits.mean()) if len(hits) else 0.0


def precision_at_1(scores: np.ndarray, multi_hot: np.ndarray,
                   mask: Optional[np.ndarray] = None) -> float:
  """Multi-label precision@1: fraction of examples whose highest-scored class is a positive."""
  if np.asarray(multi_hot).ndim != 2:
    raise ValueError("precision_at_1 needs multi-hot labels (B, K); use top1_accuracy for ints.")
  return top1_accuracy(scores, multi_hot, mask)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                       mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
  """(examples of each class (K,) int, the fraction of them predicted as their class (K,), NaN for a
  class without examples): each class's recall, which the mean accuracy hides on unbalanced data."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  keep = _mask(mask, len(labels))
  predictions, labels = predictions[keep], labels[keep]
  examples = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels[predictions == labels], minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return examples, np.where(examples > 0, hits / np.maximum(examples, 1), np.nan)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                     mask: Optional[np.ndarray] = None) -> np.ndarray:
  """(K, K) int64 counts: row = the true class, column = the predicted class; its diagonal over its
  row sums is per_class_accuracy."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  keep = _mask(mask, len(labels))
  cells = labels[keep].astype(np.int64) * num_classes + predictions[keep]
  return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """AP of one class: sum over score thresholds of (recall step) x precision, ties grouped.

  The same definition as sklearn.metrics.average_precision_score (no interpolation). NaN if the
  class has no positive.
  """
  scores, positives = np.asarray(scores, np.float64), np.asarray(positives) > 0
  num_positive = positives.sum()
  if num_positive == 0:
    return float("nan")
  order = np.argsort(-scores, kind="stable")
  scores, positives = scores[order], positives[order]
  last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # Thresholds: each distinct score.
  true_pos = np.cumsum(positives)[last_of_tie]
  predicted = (np.arange(len(scores)) + 1)[last_of_tie]
  precision = true_pos / predicted
  recall_step = np.diff(np.r_[0, true_pos]) / num_positive
  return float(np.sum(recall_step * precision))


def per_class_average_precision(scores: np.ndarray, multi_hot: np.ndarray,
                                mask: Optional[np.ndarray] = None) -> np.ndarray:
  """(K,) the average precision of each class over the (unmasked) examples; NaN for a class without
  a positive."""
  scores, multi_hot = np.asarray(scores), np.asarray(multi_hot)
  keep = _mask(mask, len(scores))
  scores, multi_hot = scores[keep], multi_hot[keep] > 0
  result = np.full(multi_hot.shape[1], np.nan)
  for k in np.flatnonzero(multi_hot.any(axis=0)):
    result[k] = average_precision(scores[:, k], multi_hot[:, k])
  return result


def mean_average_precision(scores: np.ndarray, multi_hot: np.ndarray,
                           mask: Optional[np.ndarray] = None) -> float:
  """Mean over the classes with at least one (unmasked) positive of their average precision."""
  per_class = per_class_average_precision(scores, multi_hot, mask)
  present = per_class[~np.isnan(per_class)]
  return float(present.mean()) if len(present) else float("nan")


class Metrics:
  """Accumulates an eval pass batch by batch; result() gives the metrics of the label kind.

  Single-label (int labels): {'accuracy', 'count'}. Multi-label (multi-hot): {'accuracy'
  (= precision@1), 'precision_at_1', 'mean_average_precision', 'count'}.
  """

  def __init__(self):
    self._scores: List[np.ndarray] = []
    self._labels: List[np.ndarray] = []
    self._hits = 0.0
    self.count = 0

  def update(self, scores: np.ndarray, labels: np.ndarray,
             mask: Optional[np.ndarray] = None) -> None:
    scores, labels = np.asarray(scores, np.float32), np.asarray(labels)
    keep = _mask(mask, len(scores))
    n = int(keep.sum())
    if not n:
      return
    self._hits += top1_accuracy(scores, labels, keep) * n
    self.count += n
    if labels.ndim == 2:
      self._scores.append(scores[keep])
      self._labels.append(labels[keep] > 0)

  def result(self) -> Dict[str, float]:
    out = {"accuracy": self._hits / max(self.count, 1), "count": float(self.count)}
    if self._scores:
      out["precision_at_1"] = out["accuracy"]
      out["mean_average_precision"] = mean_average_precision(
          np.concatenate(self._scores), np.concatenate(self._labels))
    return out
