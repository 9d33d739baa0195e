"""Specification of create_model: names people know, overrides, and errors for what does not exist."""
import pytest

from vit_jax import model_fields
from vit_jax.models import create_model, list_models, registry

PAPER_NAMES = ["ViT-Ti/16", "ViT-S/16", "ViT-S/32", "ViT-B/8", "ViT-B/16", "ViT-B/32",
               "ViT-L/16", "ViT-L/32", "ViT-H/14"]


def test_registry_has_the_paper_variants():
  assert set(PAPER_NAMES) <= set(list_models())


def test_variant_dimensions_follow_the_paper():
  h14 = create_model("ViT-H/14")
  assert (h14.hidden_size, h14.mlp_dim, h14.num_heads, h14.num_layers, h14.patch_size) == (
      1280, 5120, 16, 32, 14)


def test_overrides_replace_architecture_and_training_fields():
  model = create_model("ViT-B/16", num_classes=10, image_size=384, hidden_size=96, num_layers=2,
                       num_heads=3, mlp_dim=128, patch_size=32, classifier="gap",
                       representation_size=64, dropout_rate=0.1, attention_dropout_rate=0.1,
                       stochastic_depth=0.1, gelu_approximate=False)
  assert (model.num_classes, model.image_size, model.hidden_size, model.patch_size) == (10, 384, 96, 32)
  assert model.classifier == "gap" and model.gelu_approximate is False


def test_defaults_are_imagenet_shape_with_tanh_gelu():
  model = create_model("ViT-S/16")
  assert (model.num_classes, model.image_size, model.gelu_approximate) == (1000, 224, True)


def test_unknown_name_lists_known_models():
  with pytest.raises(ValueError, match="unknown model 'ViT-X/16'.*ViT-B/16"):
    create_model("ViT-X/16")


def test_unknown_override_is_an_error_naming_it():
  with pytest.raises(ValueError, match="hiden_size"):
    create_model("ViT-B/16", hiden_size=10)


def test_unknown_dtype_is_an_error():
  with pytest.raises(ValueError, match="dtype must be one of"):
    create_model("ViT-B/16", dtype="float8")


def test_the_family_modules_are_listed_by_name_in_one_order_for_jax_and_for_configs():
  """The registry imports the family modules it lists; model_fields reads the same ones without jax."""
  assert tuple(m.__name__.rsplit(".", 1)[1] for m in registry.FAMILY_MODULES) == (
      model_fields.FAMILY_MODULES)
  assert len(registry.FAMILIES) == len(registry.FAMILY_MODULES)
