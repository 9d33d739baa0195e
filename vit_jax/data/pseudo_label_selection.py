"""Which pseudo-labelled examples a student trains on: Noisy Student's threshold and class balancing.

Xie et al. 2020 (Sec. 3 and App. A) drop the images whose highest probability is below a threshold
(0.3 on ImageNet) and balance the classes: an image belongs to the class the teacher predicts; a class
with more than K images keeps the K with the highest confidence, a class with fewer duplicates its
images up to K (K = 130k for ImageNet). Made exact here:

- confidence = the highest probability; the class = its arg-max (the lowest class id on a tie);
  an example is confident when confidence >= threshold.
- per_class = 0: every confident example once (no balancing).
- per_class = K: within each class, the confident examples ranked by confidence (highest first,
  the earlier row first on a tie); n >= K of them: the first K, once each; 0 < n < K: every one
  floor(K / n) times and the first K mod n once more, so the class has exactly K rows; n = 0: the
  class stays empty (named in Counts.empty_classes).
"""
import dataclasses

import numpy as np

from vit_jax.data.pseudo_label_store import Counts


@dataclasses.dataclass(frozen=True)
class Selection:
  rows: np.ndarray     # (u,) int, increasing: the kept examples' rows in the probabilities
  copies: np.ndarray   # (u,) int32 >= 1
  counts: Counts


def select(probabilities: np.ndarray, threshold: float, per_class: int) -> Selection:
  """The examples (rows of `probabilities`, (n, K)) to train on, and how often (module doc)."""
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold={threshold} must lie in [0, 1]")
  if per_class < 0:
    raise ValueError(f"per_class={per_class} must be >= 0 (0: no class balancing)")
  n, num_classes = probabilities.shape
  confidence = probabilities.max(axis=1)
  predicted = probabilities.argmax(axis=1)
  confident = np.flatnonzero(confidence >= threshold)
  copies = np.zeros(n, np.int64)
  empty = [c for c in range(num_classes) if not np.any(predicted[confident] == c)]
  if not per_class:
    copies[confident] = 1
  else:
    for c in range(num_classes):
      members = confident[predicted[confident] == c]
      if not len(members):
        continue
      ranked = members[np.argsort(-confidence[members], kind="stable")]
      if len(ranked) >= per_class:
        copies[ranked[:per_class]] = 1
      else:
        times, extra = divmod(per_class, len(ranked))
        copies[ranked] = times
        copies[ranked[:extra]] += 1
  rows = np.flatnonzero(copies)
  per_class_rows = np.bincount(predicted[rows], weights=copies[rows], minlength=num_classes)
  counts = Counts(examples=n, confident=len(confident), kept=len(rows), rows=int(copies.sum()),
                  per_class=tuple(int(r) for r in per_class_rows), empty_classes=tuple(empty))
  return Selection(rows, copies[rows].astype(np.int32), counts)


def labels_of(probabilities: np.ndarray, mode: str) -> np.ndarray:
  """The stored labels of these rows: 'soft' the distributions, 'hard' the arg-max class ids."""
  if mode == "soft":
    return probabilities
  if mode == "hard":
    return probabilities.argmax(axis=1)
  raise ValueError(f"mode {mode!r}: use 'soft' or 'hard'")
