"""Specification of few-shot linear evaluation: the closed-form ridge fit is scikit-learn's Ridge on
standardised features (with fewer or more examples than features), k distinct examples per class are
drawn per seed and nested across k, and separable features are classified exactly."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from vit_jax.metrics import fewshot

NUM_CLASSES, DIM = 5, 12


CLASS_MEANS = np.random.default_rng(99).normal(0.0, 3.0, (NUM_CLASSES, DIM))


def separable(per_class, seed):
  """Features = the class's mean (CLASS_MEANS: every dimension tells the classes apart) plus
  N(0, 0.1) noise: clusters far apart, as standardising by a few shots' statistics needs (pure-noise
  dimensions would be scaled up to the size of the informative ones)."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  return CLASS_MEANS[labels] + rng.normal(0.0, 0.1, (len(labels), DIM)), labels


@pytest.mark.parametrize("examples", [8, 40])  # fewer and more examples than the 12 features
def test_the_fit_is_ridge_regression_to_plus_minus_one_targets_with_a_free_bias(examples):
  rng = np.random.default_rng(examples)
  features = rng.normal(size=(examples, DIM)) * rng.uniform(0.5, 3.0, DIM) + 2.0
  labels = rng.integers(0, NUM_CLASSES, examples)
  probe = fewshot.fit(features, labels, NUM_CLASSES, l2=3.0)
  standardised = (features - features.mean(0)) / (features.std(0) + 1e-5)
  reference = Ridge(alpha=3.0).fit(standardised, fewshot.targets(labels, NUM_CLASSES))
  np.testing.assert_allclose(probe.weights, reference.coef_.T, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(probe.bias, reference.intercept_, rtol=1e-9, atol=1e-12)
  test = rng.normal(size=(7, DIM))
  np.testing.assert_allclose(probe.scores(test),
                             reference.predict((test - features.mean(0)) / (features.std(0) + 1e-5)),
                             rtol=1e-9, atol=1e-12)


def test_each_seed_draws_k_distinct_examples_per_class_nested_across_k():
  labels = np.repeat(np.arange(NUM_CLASSES), 30)
  orders = fewshot.class_orders(labels, NUM_CLASSES, seed=0, shots=25)
  for c, order in enumerate(orders):
    assert sorted(order) == list(np.flatnonzero(labels == c))  # every example of the class, once
  again = fewshot.class_orders(labels, NUM_CLASSES, seed=0, shots=25)
  other = fewshot.class_orders(labels, NUM_CLASSES, seed=1, shots=25)
  assert all(np.array_equal(a, b) for a, b in zip(orders, again))
  assert not all(np.array_equal(a[:5], b[:5]) for a, b in zip(orders, other))
  with pytest.raises(ValueError, match=r"class 4 has 3 examples in the train split, fewer than 5 shots"):
    fewshot.class_orders(np.r_[np.repeat(np.arange(4), 10), [4, 4, 4]], NUM_CLASSES, seed=0, shots=5)


def test_separable_features_are_classified_exactly_from_one_shot_on():
  train, train_labels = separable(30, seed=0)
  test, test_labels = separable(20, seed=1)
  result = fewshot.evaluate(train, train_labels, test, test_labels, NUM_CLASSES, shots=(25, 1, 5),
                            seeds=3)
  assert result == {1: [1.0] * 3, 5: [1.0] * 3, 25: [1.0] * 3}


def test_random_features_score_near_chance_and_bad_settings_are_refused():
  rng = np.random.default_rng(0)
  train, test = rng.normal(size=(250, DIM)), rng.normal(size=(500, DIM))
  labels = np.repeat(np.arange(NUM_CLASSES), 50)
  result = fewshot.evaluate(train, labels, test, np.repeat(np.arange(NUM_CLASSES), 100), NUM_CLASSES,
                            shots=(10,), seeds=2)
  assert all(abs(accuracy - 1 / NUM_CLASSES) < 0.1 for accuracy in result[10])
  with pytest.raises(ValueError, match="must be positive numbers of examples per class"):
    fewshot.evaluate(train, labels, test, labels, NUM_CLASSES, shots=(0, 5))
  with pytest.raises(ValueError, match="l2=0 must be positive"):
    fewshot.fit(train, labels, NUM_CLASSES, l2=0)
