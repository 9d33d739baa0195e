"""Specification of the eval metrics: hand-computed cases, sklearn's AP, masks, accumulation."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from vit_jax.metrics import classification as evaluate

SCORES = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.7], [0.4, 0.5, 0.6], [0.1, 0.0, 0.2]])
MULTI_HOT = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [1, 0, 0]], np.float32)


def test_top1_accuracy_of_integer_labels_ignores_masked_examples():
  assert evaluate.top1_accuracy(SCORES, np.array([0, 1, 1, 2])) == 0.75
  assert evaluate.top1_accuracy(SCORES, np.array([0, 1, 1, 2]), mask=[1, 1, 0, 0]) == 1.0


def test_precision_at_1_counts_top_classes_that_are_positives():
  # Tops: 0 (positive), 1 (negative), 2 (positive), 2 (negative).
  assert evaluate.precision_at_1(SCORES, MULTI_HOT) == 0.5
  assert evaluate.precision_at_1(SCORES, MULTI_HOT, mask=[1, 0, 1, 0]) == 1.0
  with pytest.raises(ValueError, match="multi-hot"):
    evaluate.precision_at_1(SCORES, np.array([0, 1, 2, 0]))


def test_average_precision_by_hand_and_with_ties_as_sklearn():
  # Ranked positives at ranks 1 and 3: (1/1 + 2/3) / 2.
  assert evaluate.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
  rng = np.random.default_rng(0)
  for _ in range(20):
    scores = rng.integers(0, 5, 30) / 4.0  # Many ties.
    positives = rng.random(30) < 0.3
    if positives.any():
      assert evaluate.average_precision(scores, positives) == pytest.approx(
          average_precision_score(positives, scores))
  assert np.isnan(evaluate.average_precision([0.1, 0.2], [0, 0]))


def test_mean_average_precision_averages_the_classes_that_have_positives():
  expected = np.mean([average_precision_score(MULTI_HOT[:, k], SCORES[:, k]) for k in range(3)])
  assert evaluate.mean_average_precision(SCORES, MULTI_HOT) == pytest.approx(expected)
  masked = evaluate.mean_average_precision(SCORES, MULTI_HOT, mask=[1, 1, 0, 0])  # Class 1 absent.
  assert masked == pytest.approx(np.mean([1.0, average_precision_score([1, 1], [0.3, 0.7])]))


def test_metrics_accumulate_padded_batches_like_one_pass():
  metrics = evaluate.Metrics()
  metrics.update(SCORES[:3], MULTI_HOT[:3])
  metrics.update(np.r_[SCORES[3:], np.zeros((2, 3))], np.r_[MULTI_HOT[3:], np.ones((2, 3))],
                 mask=[1, 0, 0])  # The last batch, padded with two masked rows.
  result = metrics.result()
  assert result["count"] == 4 and result["precision_at_1"] == result["accuracy"] == 0.5
  assert result["mean_average_precision"] == pytest.approx(
      evaluate.mean_average_precision(SCORES, MULTI_HOT))
  single = evaluate.Metrics()
  single.update(SCORES, np.array([0, 1, 1, 2]), mask=[1, 1, 1, 0])
  assert single.result() == {"accuracy": 2 / 3, "count": 3.0}


PREDICTED = np.array([0, 1, 1, 2, 2, 0, 1])
TRUE = np.array([0, 1, 2, 2, 2, 0, 0])


def test_per_class_accuracy_is_each_classs_share_of_hits_and_nan_without_examples():
  examples, accuracy = evaluate.per_class_accuracy(PREDICTED, TRUE, 4)
  assert list(examples) == [3, 1, 3, 0]
  np.testing.assert_array_equal(accuracy, [2 / 3, 1.0, 2 / 3, np.nan])
  examples, accuracy = evaluate.per_class_accuracy(PREDICTED, TRUE, 4, mask=[1, 1, 1, 1, 1, 1, 0])
  assert list(examples) == [2, 1, 3, 0] and accuracy[0] == 1.0  # the masked miss is not counted


def test_the_confusion_matrix_counts_true_rows_against_predicted_columns_once():
  confusion = evaluate.confusion_matrix(PREDICTED, TRUE, 3, mask=[1, 1, 1, 1, 1, 0, 1])
  np.testing.assert_array_equal(confusion, [[1, 1, 0],
                                            [0, 1, 0],
                                            [0, 1, 2]])
  assert confusion.sum() == 6 and confusion.dtype == np.int64


def test_per_class_average_precision_is_sklearns_for_classes_with_positives():
  per_class = evaluate.per_class_average_precision(SCORES, MULTI_HOT, mask=[1, 1, 0, 1])
  assert np.isnan(per_class[1])  # its only positive is masked
  for k in (0, 2):
    keep = [0, 1, 3]
    assert per_class[k] == pytest.approx(average_precision_score(MULTI_HOT[keep, k], SCORES[keep, k]))
