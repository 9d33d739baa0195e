"""Specification of sweep spaces: an axis per key, products cross them, zips pair them."""
import pytest

from vit_jax.sweep.space import axis, product, zipped


def test_an_axis_is_one_trial_per_value():
  assert axis("optim.learning_rate", [1e-3, 3e-3]) == [
      {"optim.learning_rate": 1e-3}, {"optim.learning_rate": 3e-3}]


def test_a_product_is_every_combination_with_the_first_factor_slowest():
  trials = product(axis("optim.weight_decay", [0.0, 0.1]), axis("model.dropout_rate", [0.0, 0.1]))
  assert trials == [
      {"optim.weight_decay": 0.0, "model.dropout_rate": 0.0},
      {"optim.weight_decay": 0.0, "model.dropout_rate": 0.1},
      {"optim.weight_decay": 0.1, "model.dropout_rate": 0.0},
      {"optim.weight_decay": 0.1, "model.dropout_rate": 0.1}]
  assert list(trials[0]) == ["optim.weight_decay", "model.dropout_rate"]  # the factors' order


def test_zipped_pairs_trials_element_by_element_and_nests_in_a_product():
  pairs = zipped(axis("optim.learning_rate", [1e-3, 3e-3]), axis("train.epochs", [30.0, 60.0]))
  assert pairs == [{"optim.learning_rate": 1e-3, "train.epochs": 30.0},
                   {"optim.learning_rate": 3e-3, "train.epochs": 60.0}]
  assert len(product(axis("seed", [0, 1, 2]), pairs)) == 6


def test_zipped_sweeps_of_unequal_length_are_an_error_naming_the_lengths():
  with pytest.raises(ValueError, match=r"equal length, got lengths \[2, 3\]"):
    zipped(axis("a", [1, 2]), axis("b", [1, 2, 3]))


@pytest.mark.parametrize("combine", [product, zipped])
def test_a_key_in_two_factors_is_an_error_naming_it(combine):
  with pytest.raises(ValueError, match="'optim.learning_rate' is swept by two of its factors"):
    combine(axis("optim.learning_rate", [1e-3]), axis("optim.learning_rate", [3e-3]))


def test_an_axis_needs_a_list_of_values():
  with pytest.raises(ValueError, match="has no values"):
    axis("seed", [])
  with pytest.raises(ValueError, match="give a list of values"):
    axis("data.name", "cifar10")
