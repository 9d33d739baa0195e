"""Specification of what every family states about itself (models/interface.py) and of the intermediates
every family sows: the same names and meanings everywhere, without changing outputs or parameters."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model, list_models
from vit_jax.models.hybrid import HybridVisionTransformer
from vit_jax.models.interface import INTERMEDIATE_NAMES, INTERMEDIATES, ModelInterface
from vit_jax.models.lvvit import LVViT
from vit_jax.models.registry import FAMILIES
from vit_jax.models.resnet import ResNetV2
from vit_jax.models.t2t import T2TViT
from vit_jax.models.tnt import TransformerInTransformer
from vit_jax.models.vit import VisionTransformer

from .tiny import TINY, images_for, random_variables

CLASS_TOKEN_VIT = ModelInterface(pooling="token", class_token=True, position_embedding="learned",
                                 representation_layer=False, dense_outputs=False)
EXPECTED = {
    VisionTransformer: CLASS_TOKEN_VIT,
    HybridVisionTransformer: CLASS_TOKEN_VIT,
    ResNetV2: ModelInterface(pooling="gap", class_token=False, position_embedding="none",
                             representation_layer=False, dense_outputs=False),
    TransformerInTransformer: CLASS_TOKEN_VIT,
    T2TViT: dataclasses.replace(CLASS_TOKEN_VIT, position_embedding="sinusoid"),
    LVViT: ModelInterface(pooling="token+aux_max", class_token=True, position_embedding="learned",
                          representation_layer=False, dense_outputs=True),
}


def test_every_family_is_specified_here():
  assert set(FAMILIES) == set(EXPECTED)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_variant_states_its_interface(name):
  model = create_model(name)
  assert model.interface == EXPECTED[type(model)]


@pytest.mark.parametrize("name", ["ViT-B/16", "R50+ViT-B/16"])
def test_vit_interface_follows_its_fields(name):
  gap = create_model(name, classifier="gap", representation_size=64).interface
  assert (gap.pooling, gap.class_token, gap.representation_layer) == ("gap", False, True)


def test_interface_is_frozen_and_rejects_unknown_kinds():
  with pytest.raises(dataclasses.FrozenInstanceError):
    CLASS_TOKEN_VIT.pooling = "gap"  # type: ignore[misc]
  with pytest.raises(ValueError, match="pooling must be one of"):
    dataclasses.replace(CLASS_TOKEN_VIT, pooling="max")
  with pytest.raises(ValueError, match="position_embedding must be one of"):
    dataclasses.replace(CLASS_TOKEN_VIT, position_embedding="rope")


# The shapes of stem_output, encoded and head_input of each family's tiny variant, batch 2.
SHAPES = {
    "ViT-micro/4": ((2, 16, 32), (2, 17, 32), (2, 32)),
    "R+ViT-testing": ((2, 16, 32), (2, 17, 32), (2, 32)),
    "BiT-testing": ((2, 8, 8, 16), (2, 4, 4, 128), (2, 128)),
    "TNT-test": ((2, 16, 32), (2, 17, 32), (2, 32)),
    "T2T-ViT-test": ((2, 4, 32), (2, 5, 32), (2, 32)),
    "LV-ViT-test": ((2, 16, 32), (2, 17, 32), (2, 32)),
}


def test_every_family_has_a_tiny_variant():
  assert set(SHAPES) == set(TINY)
  assert {type(create_model(name)) for name in TINY} == set(FAMILIES)


@pytest.mark.parametrize("name", TINY)
def test_intermediates_have_the_same_names_and_meaning_in_every_family(name):
  model = create_model(name, num_classes=5)
  headless = create_model(name, num_classes=0)
  variables = random_variables(model)
  images = images_for(model)
  heads = {"head", "aux_head"}
  headless_variables = {**variables, "params": {k: v for k, v in variables["params"].items()
                                                if k not in heads}}

  @jax.jit
  def outputs(variables, headless_variables, images):
    plain = model.apply(variables, images)
    sown, state = model.apply(variables, images, mutable=[INTERMEDIATES])
    return plain, sown, state[INTERMEDIATES], headless.apply(headless_variables, images)

  plain, sown, intermediates, features = outputs(variables, headless_variables, images)
  assert set(intermediates) == set(INTERMEDIATE_NAMES)
  shapes = tuple(intermediates[key][0].shape for key in INTERMEDIATE_NAMES)
  assert shapes == SHAPES[name]
  np.testing.assert_array_equal(sown, plain)  # sowing changes nothing it returns
  # head_input is what the model returns without a head.
  np.testing.assert_allclose(intermediates["head_input"][0].astype(jnp.float32), features, atol=1e-6)


@pytest.mark.parametrize("name", TINY)
def test_sowing_adds_no_variables(name):
  model = create_model(name)
  size = model.image_size
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  assert INTERMEDIATES not in variables


def test_vit_head_input_follows_the_representation_layer():
  model = create_model("ViT-micro/4", num_classes=5, representation_size=7)
  variables = random_variables(model)
  _, state = jax.jit(lambda v, x: model.apply(v, x, mutable=[INTERMEDIATES]))(
      variables, jnp.ones((2, 16, 16, 3)))
  (head_input,) = state[INTERMEDIATES]["head_input"]
  assert head_input.shape == (2, 7) and np.all(np.abs(head_input) <= 1.0)  # tanh of pre_logits
