"""Few-shot linear evaluation as in the ViT paper (its appendix; big_vision's few-shot evaluator): how
well frozen pre-logit features separate classes from k labelled examples each, without training.

For each seed, k examples per class are drawn from the train features (one random order per class,
so the 1-shot examples are among the 5-shot ones, and so on); a linear map is fitted to them in
closed form by ridge regression to one-vs-all targets in {-1, +1}; its argmax is scored (top-1) on
every test example; the result is the mean over seeds. Our choices (docs/evaluation.md): the features
are standardised with the drawn examples' mean and standard deviation; the bias is not regularised;
one fixed ridge strength, L2 = 2**10, big_vision's default, as no held-out examples are spent to
choose one. Host-side numpy in float64: the systems are at most (classes x k) or features wide.
"""
import dataclasses
from typing import Sequence

import numpy as np

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = 3
DEFAULT_L2 = 2.0 ** 10
_SCALE_FLOOR = 1e-5  # added to each feature's standard deviation: constant features stay finite


@dataclasses.dataclass(frozen=True)
class LinearProbe:
  """scores(x) = ((x - mean) / scale) @ weights + bias: one column per class."""
  mean: np.ndarray     # (D,)
  scale: np.ndarray    # (D,)
  weights: np.ndarray  # (D, K)
  bias: np.ndarray     # (K,)

  def scores(self, features: np.ndarray) -> np.ndarray:
    return ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.weights + self.bias

  def predict(self, features: np.ndarray) -> np.ndarray:
    return np.argmax(self.scores(features), axis=-1)


def targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """One-vs-all regression targets: +1 for the example's class, -1 for every other."""
  return 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float = DEFAULT_L2
        ) -> LinearProbe:
  """Ridge regression of targets(labels) on the standardised features, with an unregularised bias:
  W = (X^T X + l2 I)^-1 X^T (Y - mean Y), or equivalently X^T (X X^T + l2 I)^-1 (Y - mean Y) when
  there are fewer examples than features (the smaller system is solved); bias = mean Y."""
  if l2 <= 0:
    raise ValueError(f"the ridge strength l2={l2} must be positive")
  x = np.asarray(features, np.float64)
  mean, scale = x.mean(axis=0), x.std(axis=0) + _SCALE_FLOOR
  x = (x - mean) / scale  # centred: the bias takes no part in the regularised system
  y = targets(labels, num_classes)
  bias = y.mean(axis=0)
  y = y - bias
  n, d = x.shape
  if n >= d:
    weights = np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ y)
  else:
    weights = x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(n), y)
  return LinearProbe(mean, scale, weights, bias)


def class_orders(labels: np.ndarray, num_classes: int, seed: int, shots: int) -> list[np.ndarray]:
  """For each class, its examples (indices into labels) in a random order drawn from `seed`; a class
  with fewer than `shots` examples is an error naming it."""
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes)
  short = np.flatnonzero(counts < shots)
  if len(short):
    raise ValueError(f"few-shot: class {short[0]} has {counts[short[0]]} examples in the train split, "
                     f"fewer than {shots} shots ({len(short)} classes have too few): use a larger "
                     "few-shot train split or fewer shots")
  rng = np.random.default_rng(seed)
  return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def evaluate(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
             test_labels: np.ndarray, num_classes: int, shots: Sequence[int] = DEFAULT_SHOTS,
             seeds: int = DEFAULT_SEEDS, l2: float = DEFAULT_L2) -> dict[int, list[float]]:
  """{k: the test accuracy for each seed 0..seeds-1} of probes fitted on k examples per class.

  The train examples must be in a fixed order (e.g. by position in their split), so that a seed
  draws the same examples whatever the number of processes that read them.
  """
  shots = sorted({int(k) for k in shots})
  if not shots or shots[0] < 1:
    raise ValueError(f"few-shot: shots {list(shots)} must be positive numbers of examples per class")
  if seeds < 1:
    raise ValueError(f"few-shot: seeds={seeds} must be at least 1")
  test_labels = np.asarray(test_labels)
  result = {k: [] for k in shots}
  for seed in range(seeds):
    orders = class_orders(train_labels, num_classes, seed, shots[-1])
    for k in shots:
      chosen = np.concatenate([order[:k] for order in orders])
      probe = fit(train_features[chosen], np.asarray(train_labels)[chosen], num_classes, l2)
      result[k].append(float(np.mean(probe.predict(test_features) == test_labels)))
  return result
