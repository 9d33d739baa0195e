"""Specification of a checkpoint as a teacher: it must be the config's model, and it scores without
noise (no dropout, no stochastic depth, so no rng)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model
from vit_jax.teacher import check_fits, class_probabilities


def _params(model):
  shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))))
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes["params"])


def test_a_teacher_of_other_classes_or_size_is_refused_naming_parameters():
  model = create_model("ViT-micro/4", num_classes=3)
  check_fits(model, _params(model), 16, "/runs/t", "ViT-micro/4")  # its own parameters fit
  with pytest.raises(ValueError, match=r"the teacher /runs/t is not a ViT-micro/4 for 16 px images "
                                       r"with this data's classes \(2 parameters differ, e\.g\. "
                                       r"\['head'\]\['bias'\]: teacher \(4,\), ViT-micro/4 \(3,\)"):
    check_fits(model, _params(create_model("ViT-micro/4", num_classes=4)), 16, "/runs/t",
               "ViT-micro/4")


def test_probabilities_are_a_noiseless_softmax_even_for_a_noisy_student():
  """A model with dropout and stochastic depth scores deterministically and without an rng (train=True
  would need a 'dropout' rng)."""
  model = create_model("ViT-micro/4", num_classes=3, dropout_rate=0.5, stochastic_depth=0.5)
  rng = np.random.default_rng(0)
  variables = {"params": jax.tree.map(lambda leaf: rng.normal(0, 0.3, leaf.shape).astype(leaf.dtype),
                                      _params(model))}
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  probabilities = np.asarray(class_probabilities(model, variables, images))
  np.testing.assert_array_equal(probabilities, class_probabilities(model, variables, images))
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
  assert probabilities.std() > 0.01  # not a constant: the random weights score the images
