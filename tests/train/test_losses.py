"""Specification of the losses: registered by name, softmax CE with label smoothing, sigmoid CE for
multi-hot targets, 'auto' following the data's label kind."""
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.train import losses


def test_label_smoothing_spreads_mass_over_all_classes():
  np.testing.assert_allclose(losses.smoothed_one_hot(jnp.array([1]), 4, 0.2),
                             [[0.05, 0.85, 0.05, 0.05]])


def test_softmax_cross_entropy_of_uniform_logits_is_log_k():
  loss = losses.get_loss("softmax_xent")(jnp.zeros((2, 10)), jnp.array([3, 7]))
  np.testing.assert_allclose(loss, np.log(10.0), rtol=1e-6)


def test_multi_hot_labels_use_sigmoid_cross_entropy_summed_over_classes():
  targets = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  np.testing.assert_allclose(losses.get_loss("sigmoid_xent")(jnp.zeros((1, 4)), targets),
                             4 * np.log(2.0), rtol=1e-6)


def test_mixed_single_label_targets_use_softmax_against_the_distribution():
  logits = jnp.zeros((1, 4))
  mixed = jnp.array([[0.5, 0.5, 0.0, 0.0]])  # e.g. mixup of classes 0 and 1
  np.testing.assert_allclose(losses.get_loss("softmax_xent")(logits, mixed), np.log(4.0), rtol=1e-6)


def test_auto_follows_the_label_kind_and_unknown_names_list_the_registered_ones():
  assert losses.resolve_loss_name("auto", multi_label=True) == "sigmoid_xent"
  assert losses.resolve_loss_name("auto", multi_label=False) == "softmax_xent"
  assert losses.resolve_loss_name("sigmoid_xent", multi_label=False) == "sigmoid_xent"
  with pytest.raises(ValueError, match="softmax_xnet.*softmax_xent"):
    losses.resolve_loss_name("softmax_xnet", multi_label=False)


def test_a_new_loss_is_one_function_and_its_registration():
  @losses.register_loss("test_squared_margin")
  def squared_margin(logits, labels, *, label_smoothing=0.0):
    del label_smoothing
    return jnp.sum(jnp.square(logits), axis=-1) + 0 * labels
  try:
    assert losses.get_loss("test_squared_margin") is squared_margin
    with pytest.raises(ValueError, match="registered twice"):
      losses.register_loss("test_squared_margin")(squared_margin)
  finally:
    losses.LOSSES.remove("test_squared_margin")
