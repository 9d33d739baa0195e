"""Specification of Noisy Student's selection: the confidence threshold, then K rows per class (the
most confident K, or every example duplicated up to K), on hand-made probabilities."""
import numpy as np
import pytest

from vit_jax.data.pseudo_label_selection import labels_of, select

# Rows 0..7 over 3 classes, as (predicted class, confidence):
#   0: (0, 0.9)  1: (0, 0.6)  2: (0, 0.8)  3: (0, 0.7)  4: (1, 0.5)  5: (1, 0.4)  6: (2, 0.6)
#   7: (0, 0.7), a tie with row 3
PROBABILITIES = np.array([
    [0.9, 0.05, 0.05], [0.6, 0.2, 0.2], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1],
    [0.3, 0.5, 0.2], [0.3, 0.4, 0.3], [0.4, 0.0, 0.6], [0.7, 0.1, 0.2]], np.float32)


def test_without_balancing_every_example_at_or_above_the_threshold_is_kept_once():
  chosen = select(PROBABILITIES, threshold=0.5, per_class=0)
  assert chosen.rows.tolist() == [0, 1, 2, 3, 4, 6, 7]  # row 5 (0.4) dropped, row 4 (0.5) kept
  assert chosen.copies.tolist() == [1] * 7
  assert (chosen.counts.examples, chosen.counts.confident, chosen.counts.kept,
          chosen.counts.rows) == (8, 7, 7, 7)
  assert chosen.counts.per_class == (5, 1, 1)


def test_a_full_class_keeps_its_k_most_confident_examples_ties_by_row():
  chosen = select(PROBABILITIES, threshold=0.3, per_class=3)
  copies = dict(zip(chosen.rows.tolist(), chosen.copies.tolist()))
  # Class 0 has rows 0 (0.9), 2 (0.8), 3 and 7 (0.7 each), 1 (0.6): the first three by confidence,
  # row 3 before row 7.
  assert {row: copies.get(row) for row in (0, 1, 2, 3, 7)} == {0: 1, 1: None, 2: 1, 3: 1, 7: None}


def test_a_short_class_duplicates_every_example_and_its_most_confident_ones_once_more():
  chosen = select(PROBABILITIES, threshold=0.3, per_class=5)
  copies = dict(zip(chosen.rows.tolist(), chosen.copies.tolist()))
  # class 1: rows 4 (0.5) and 5 (0.4), 5 = 2 x 2 + 1 rows: the more confident row 4 once more
  assert {row: copies[row] for row in (4, 5)} == {4: 3, 5: 2}
  assert copies[6] == 5                                          # class 2: its one example 5 times
  assert [copies[row] for row in (0, 1, 2, 3, 7)] == [1] * 5     # class 0: exactly 5
  assert chosen.counts.per_class == (5, 5, 5) and chosen.counts.rows == 15
  assert chosen.counts.kept == 8 and chosen.counts.empty_classes == ()


def test_a_class_without_confident_examples_stays_empty_and_is_named():
  chosen = select(PROBABILITIES, threshold=0.55, per_class=2)
  assert chosen.counts.empty_classes == (1,)  # rows 4 and 5 (0.5, 0.4) fall below 0.55
  assert chosen.counts.per_class == (2, 0, 2)
  assert chosen.rows.tolist() == [0, 2, 6] and chosen.copies.tolist() == [1, 1, 2]


def test_soft_labels_are_the_distributions_and_hard_labels_the_top_classes():
  np.testing.assert_array_equal(labels_of(PROBABILITIES[:2], "soft"), PROBABILITIES[:2])
  assert labels_of(PROBABILITIES, "hard").tolist() == [0, 0, 0, 0, 1, 1, 2, 0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold=1.5, per_class=0), "threshold=1.5 must lie in"),
    (dict(threshold=0.3, per_class=-1), "per_class=-1 must be >= 0"),
])
def test_options_out_of_range_are_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    select(PROBABILITIES, **kwargs)
