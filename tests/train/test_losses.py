"""Specification of the losses: softmax CE with label smoothing, sigmoid CE for multi-hot targets."""
import jax.numpy as jnp
import numpy as np

from vit_jax.train.losses import classification_loss, smoothed_one_hot


def test_label_smoothing_spreads_mass_over_all_classes():
  np.testing.assert_allclose(smoothed_one_hot(jnp.array([1]), 4, 0.2), [[0.05, 0.85, 0.05, 0.05]])


def test_softmax_cross_entropy_of_uniform_logits_is_log_k():
  loss = classification_loss(jnp.zeros((2, 10)), jnp.array([3, 7]))
  np.testing.assert_allclose(loss, np.log(10.0), rtol=1e-6)


def test_multi_hot_labels_use_sigmoid_cross_entropy_summed_over_classes():
  logits = jnp.zeros((1, 4))
  targets = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  np.testing.assert_allclose(classification_loss(logits, targets, multi_label=True), 4 * np.log(2.0),
                             rtol=1e-6)


def test_mixed_single_label_targets_use_softmax_against_the_distribution():
  logits = jnp.zeros((1, 4))
  mixed = jnp.array([[0.5, 0.5, 0.0, 0.0]])  # e.g. mixup of classes 0 and 1
  np.testing.assert_allclose(classification_loss(logits, mixed), np.log(4.0), rtol=1e-6)
  np.testing.assert_allclose(classification_loss(logits, mixed, multi_label=True), 4 * np.log(2.0),
                             rtol=1e-6)
