"""Specification of the R+ViT hybrids: counts, the public checkpoint tree, strides, fine-tuning, training."""
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.checkpoint import load_npz, load_pretrained
from vit_jax.configuration import base_config, model_overrides
from vit_jax.export import save_npz
from vit_jax.models import create_model
from vit_jax.models.hybrid import HybridVisionTransformer


def abstract_params(model):
  size = model.image_size
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  return nn.unbox(variables["params"])


def flat_shapes(params):
  return {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def count(params):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def zeros_like_init(model):
  """Params of the model's shapes, all zero (no compilation): a stand-in for a fresh init."""
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract_params(model))


@pytest.fixture(scope="module")
def tiny():
  """R+ViT-testing with 3 classes and its initial params (initialised once for the module)."""
  model = create_model("R+ViT-testing", num_classes=3)
  variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, 32, 32, 3)), train=False))(
      jax.random.key(0))
  return model, jax.tree.map(np.asarray, nn.unbox(variables["params"]))


# Published counts (docs/checkpoint_format.md#model-family): 224 px, 1000 classes.
PUBLISHED = {
    "R50+ViT-B/16": 98_659_112, "R+ViT-Ti/16": 6_337_704, "R26+ViT-S/32": 36_431_912,
    "R26+ViT-B/32": 101_383_976, "R50+ViT-L/32": 328_994_856,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published_table(name):
  assert count(abstract_params(create_model(name))) == PUBLISHED[name]


def test_r50_b16_at_384_has_a_24x24_grid():
  params = abstract_params(create_model("R50+ViT-B/16", image_size=384))
  assert count(params) == 98_950_952
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 577, 768)


def test_r50_b16_tree_is_the_public_checkpoint_tree():
  flat = flat_shapes(abstract_params(create_model("R50+ViT-B/16")))
  assert len(flat) == 356
  assert flat["conv_root/kernel"] == (7, 7, 3, 64) and "conv_root/bias" not in flat
  assert flat["gn_root/scale"] == (64,)
  assert flat["block1/unit1/conv1/kernel"] == (1, 1, 64, 64)
  assert flat["block1/unit2/conv1/kernel"] == (1, 1, 256, 64)
  assert flat["block1/unit1/conv_proj/kernel"] == (1, 1, 64, 256)
  assert flat["block1/unit1/gn_proj/bias"] == (256,)
  assert flat["block2/unit1/conv_proj/kernel"] == (1, 1, 256, 512)
  assert flat["block3/unit9/conv3/kernel"] == (1, 1, 256, 1024)
  assert flat["block3/unit9/gn3/scale"] == (1024,)
  assert "block1/unit2/conv_proj/kernel" not in flat and "block4/unit1/conv1/kernel" not in flat
  assert flat["embedding/kernel"] == (1, 1, 1024, 768)
  assert flat["cls"] == (1, 1, 768)
  assert flat["Transformer/posembed_input/pos_embedding"] == (1, 197, 768)
  assert flat["Transformer/encoderblock_11/MultiHeadDotProductAttention_0/query/kernel"] == (768, 12, 64)
  assert flat["head/kernel"] == (768, 1000)


def test_r_ti16_is_the_root_alone_under_8x8_patches_so_stride_32():
  model = create_model("R+ViT-Ti/16")
  flat = flat_shapes(abstract_params(model))
  assert not [k for k in flat if k.startswith("block")]
  assert flat["embedding/kernel"] == (8, 8, 64, 192)
  assert flat["Transformer/posembed_input/pos_embedding"] == (1, 50, 192)  # 7x7 grid + cls
  assert model.feature_stride * model.patch_size == 32


@pytest.mark.parametrize("name, stride", [("R50+ViT-B/16", 16), ("R26+ViT-S/32", 32),
                                          ("R50+ViT-L/32", 32), ("R+ViT-testing", 8)])
def test_total_stride(name, stride):
  model = create_model(name)
  assert model.feature_stride * model.patch_size == stride


def test_defaults_are_the_official_numerics_and_a_vit_underneath():
  model = create_model("R50+ViT-B/16")
  assert isinstance(model, HybridVisionTransformer)
  assert (model.group_norm_epsilon, model.weight_std_epsilon, model.weight_std_form) == (1e-6, 1e-5, "std")
  assert model.gelu_approximate is True and model.classifier == "token"


def test_units_start_as_identity_maps_with_zero_gn3_scale(tiny):
  _, params = tiny
  np.testing.assert_array_equal(params["block1"]["unit1"]["gn3"]["scale"], 0.0)
  np.testing.assert_array_equal(params["gn_root"]["scale"], 1.0)


def test_the_root_width_may_differ_from_the_stage_widths():
  """timm's stem_chs: the root conv's channels, independent of the stages' 64 * width_factor * 2**i."""
  flat = flat_shapes(abstract_params(create_model("R+ViT-testing", resnet_root_width=24)))
  assert flat["conv_root/kernel"] == (7, 7, 3, 24) and flat["gn_root/scale"] == (24,)
  assert flat["block1/unit1/conv1/kernel"] == (1, 1, 24, 16)
  assert flat["block1/unit1/conv_proj/kernel"] == (1, 1, 24, 64)


def test_every_parameter_carries_logical_axis_names():
  model = create_model("R+ViT-testing", num_classes=10)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  assert all(len(leaf.names) == len(leaf.value.shape) for leaf in leaves)


def test_image_size_must_be_a_multiple_of_the_total_stride():
  model = create_model("R+ViT-testing", image_size=36)
  with pytest.raises(ValueError, match="multiple of the hybrid's total stride 8"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 36, 36, 3))))


def test_finetunes_at_twice_the_resolution_with_resized_position_embeddings(tiny):
  _, pretrained = tiny                                                  # 32 px: 4x4 grid
  large = create_model("R+ViT-testing", num_classes=7, image_size=64)  # 64 px: 8x8 grid
  params, report = load_pretrained(zeros_like_init(large), pretrained, has_class_token=True,
                                   keep_pre_logits=False)
  posemb = "Transformer/posembed_input/pos_embedding"
  assert report.resized == [(posemb, (1, 17, 32), (1, 65, 32))]
  assert sorted(report.reset) == ["head/bias", "head/kernel"]
  np.testing.assert_array_equal(params["block2"]["unit1"]["conv2"]["kernel"],
                                pretrained["block2"]["unit1"]["conv2"]["kernel"])
  assert params["gn_root"]["scale"].shape == (16,)
  images = jax.random.normal(jax.random.key(3), (2, 64, 64, 3))
  logits = jax.jit(lambda p, x: large.apply({"params": p}, x))(params, images)
  assert logits.shape == (2, 7) and np.all(np.isfinite(logits))


def test_npz_round_trip_keeps_groupnorm_affines_as_vectors(tiny, tmp_path):
  _, params = tiny
  save_npz(params, tmp_path / "hybrid.npz")
  loaded = load_npz(tmp_path / "hybrid.npz")
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  # Published checkpoints store GroupNorm affines as (1, 1, 1, C); they load as (C,).
  with np.load(tmp_path / "hybrid.npz") as data:
    arrays = {k: (v.reshape(1, 1, 1, -1) if "/gn" in f"/{k}" and v.ndim == 1 else v)
              for k, v in data.items()}
  np.savez(tmp_path / "published_layout.npz", **arrays)
  assert arrays["block1/unit1/gn1/scale"].shape == (1, 1, 1, 16)
  relaid = load_npz(tmp_path / "published_layout.npz")
  assert relaid["block1"]["unit1"]["gn1"]["scale"].shape == (16,)
  assert relaid["gn_root"]["bias"].shape == (16,)


def load_config(arg):
  path = pathlib.Path(__file__).resolve().parents[2] / "configs" / "hybrid.py"
  spec = importlib.util.spec_from_file_location("hybrid_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("variant, name", [("R50+B/16", "R50+ViT-B/16"), ("R+Ti/16", "R+ViT-Ti/16"),
                                           ("R26+ViT-S/32", "R26+ViT-S/32")])
def test_config_is_the_vit_paper_imagenet_recipe(variant, name):
  config = load_config(variant)
  assert config.model_name == name
  assert (config.data.source, config.data.name, config.data.image_size) == ("tfds", "imagenet2012", 224)
  assert (config.optim.name, config.optim.learning_rate, config.optim.weight_decay,
          config.optim.warmup_steps, config.optim.grad_clip_norm, config.batch_size,
          config.train.epochs, config.model.dropout_rate) == (
              "adamw", 3e-3, 0.3, 10_000, 1.0, 4096, 300.0, 0.1)
  model = create_model(config.model_name, num_classes=1000, image_size=config.data.image_size,
                       **model_overrides(config))
  assert isinstance(model, HybridVisionTransformer) and model.dropout_rate == 0.1
  with pytest.raises(AttributeError):
    config.optim.learning_rat = 1.0  # locked


def test_config_rejects_unknown_variant():
  with pytest.raises(ValueError, match="R50\\+B/16"):
    load_config("R50+H/14")


def test_tiny_hybrid_trains_on_eight_devices_with_the_batch_sharded(train_losses):
  config = base_config("R+ViT-testing")
  config.data.image_size = 32
  config.batch_size = 16
  config.train.steps = 8
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 1
  config.model.gelu_approximate = False
  config.mesh.data = -1
  config.sharding = "data_parallel"
  losses = train_losses(config, steps=8)
  assert jax.device_count() == 8
  assert all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
