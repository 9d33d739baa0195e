"""Specification of BiT (ResNet-v2): counts, names, root block, weight standardisation, config, training."""
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.configuration import base_config, model_overrides
from vit_jax.models import create_model
from vit_jax.models.resnet import ResNetV2, RootBlock, StdConv, standardize_weight


def abstract_params(model):
  size = model.image_size
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  return nn.unbox(variables["params"])


def flat_shapes(params):
  return {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


# Published counts (docs/architectures.md#bit-variants): 224 px, 1000 classes.
PUBLISHED = {
    "BiT-R50x1": 25_549_352, "BiT-R50x3": 217_319_080, "BiT-R101x1": 44_541_480,
    "BiT-R101x3": 387_934_888, "BiT-R152x2": 236_335_208, "BiT-R152x4": 936_533_224,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published_table(name):
  params = abstract_params(create_model(name))
  assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)) == PUBLISHED[name]


def test_r50x1_tree_uses_the_official_bit_names():
  flat = flat_shapes(abstract_params(create_model("BiT-R50x1")))
  assert flat["root_block/conv_root/kernel"] == (7, 7, 3, 64)
  assert flat["block1/unit01/gn1/scale"] == (64,)
  assert flat["block1/unit01/conv_proj/kernel"] == (1, 1, 64, 256)
  assert flat["block1/unit01/conv2/kernel"] == (3, 3, 64, 64)
  assert flat["block2/unit01/conv_proj/kernel"] == (1, 1, 256, 512)
  assert flat["block4/unit03/conv3/kernel"] == (1, 1, 512, 2048)
  assert flat["norm-pre-head/bias"] == (2048,)
  assert flat["head/kernel"] == (2048, 1000)
  assert "block1/unit02/conv_proj/kernel" not in flat and "block4/unit04/gn1/scale" not in flat
  # Convolutions have no bias; GroupNorm affines are (C,), not the (1, 1, 1, C) of old checkpoints.
  assert not [k for k in flat if k.startswith("block") and k.endswith("bias") and "/gn" not in k]
  assert all(len(shape) == 1 for key, shape in flat.items() if "/gn" in key)


def test_every_parameter_carries_logical_axis_names():
  model = create_model("BiT-testing", num_classes=10)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  assert all(len(leaf.names) == len(leaf.value.shape) for leaf in leaves)


def test_weight_standardisation_normalises_each_output_channel():
  kernel = np.random.RandomState(0).normal(1.0, 3.0, (3, 3, 4, 5)).astype(np.float32)
  for form in ("sqrt_var", "std"):
    w = np.asarray(jax.jit(standardize_weight, static_argnums=(1, 2))(kernel, 1e-10, form))
    np.testing.assert_allclose(w.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(w.std(axis=(0, 1, 2)), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="weight_std_form"):
    standardize_weight(kernel, 1e-5, "l2")


def test_std_conv_ignores_scale_and_shift_of_its_kernel():
  conv = StdConv(6, 3, padding="SAME")
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  kernel = jax.random.normal(jax.random.key(2), (3, 3, 4, 6))
  apply = jax.jit(lambda k: conv.apply({"params": {"kernel": k}}, x))
  a, b = apply(kernel), apply(5.0 * kernel - 2.0)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_root_block_pads_its_max_pool_with_zeros():
  """A 2x2 image whose stem output is negative pools to exactly 0 (the official zero padding)."""
  root = RootBlock(width=1, num_groups=1)
  kernel = np.zeros((7, 7, 1, 1), np.float32)
  kernel[3:5, 3:5] = 1.0  # the taps that see the 2x2 image after the symmetric pad of 3
  images = -jnp.ones((1, 2, 2, 1))
  stem = StdConv(1, 7, strides=2, padding=((3, 3), (3, 3))).apply({"params": {"kernel": kernel}}, images)
  assert stem.shape == (1, 1, 1, 1) and float(stem[0, 0, 0, 0]) < 0
  pooled = root.apply({"params": {"conv_root": {"kernel": kernel}}}, images)
  np.testing.assert_array_equal(pooled, 0.0)


@pytest.fixture(scope="module")
def tiny():
  """BiT-testing with 5 classes, a batch of images and its initial params (initialised once)."""
  model = create_model("BiT-testing", num_classes=5)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = jax.jit(lambda r: model.init(r, images))(jax.random.key(1))
  return model, images, nn.unbox(variables["params"])


def test_head_starts_at_zero_and_features_come_without_it(tiny):
  model, images, params = tiny
  logits = jax.jit(model.apply)({"params": params}, images)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, 0.0)
  body = {k: v for k, v in params.items() if k != "head"}
  features = jax.jit(create_model("BiT-testing", num_classes=0).apply)({"params": body}, images)
  assert features.shape == (2, 128)  # 4 x (16 x 2) channels after the second stage
  assert float(jnp.std(features)) > 0


def test_bfloat16_compute_keeps_float32_params_and_logits(tiny):
  _, images, params = tiny
  model = create_model("BiT-testing", num_classes=5, dtype="bfloat16")
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract_params(model)))
  assert jax.jit(model.apply)({"params": params}, images).dtype == jnp.float32


def test_overrides_set_depth_width_groups_and_eps():
  model = create_model("BiT-R50x1", resnet_layers=(1, 1), resnet_width_factor=0.5, num_groups=16,
                       group_norm_epsilon=1e-6, weight_std_epsilon=1e-8, num_classes=10, image_size=64)
  assert isinstance(model, ResNetV2)
  assert (model.resnet_layers, model.resnet_width_factor, model.num_groups) == ((1, 1), 0.5, 16)
  flat = flat_shapes(abstract_params(model))
  assert flat["root_block/conv_root/kernel"] == (7, 7, 3, 32) and flat["head/kernel"] == (256, 10)


def test_the_root_width_may_differ_from_the_stage_widths():
  """timm's stem_chs: the root conv's channels, independent of the stages' 64 * width_factor * 2**i."""
  model = create_model("BiT-testing", resnet_root_width=24, num_classes=5)
  flat = flat_shapes(abstract_params(model))
  assert flat["root_block/conv_root/kernel"] == (7, 7, 3, 24)
  assert flat["block1/unit01/conv1/kernel"] == (1, 1, 24, 16)
  assert flat["block1/unit01/conv_proj/kernel"] == (1, 1, 24, 64)
  assert flat["block2/unit01/conv1/kernel"] == (1, 1, 64, 32)
  default = flat_shapes(abstract_params(create_model("BiT-testing", num_classes=5)))
  assert default["root_block/conv_root/kernel"] == (7, 7, 3, 16)  # 64 * 0.25


def load_config(arg):
  path = pathlib.Path(__file__).resolve().parents[2] / "configs" / "bit.py"
  spec = importlib.util.spec_from_file_location("bit_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("variant", ["R50x1", "BiT-R152x4"])
def test_config_is_the_bit_upstream_imagenet_recipe(variant):
  config = load_config(variant)
  assert config.model_name == "BiT-" + variant.replace("BiT-", "")
  assert (config.data.source, config.data.name, config.data.image_size) == ("tfds", "imagenet2012", 224)
  assert (config.optim.name, config.optim.learning_rate, config.optim.weight_decay,
          config.optim.warmup_steps, config.batch_size, config.train.epochs) == (
              "sgd", 0.48, 1e-4, 5000, 4096, 90.0)
  model = create_model(config.model_name, num_classes=1000, image_size=config.data.image_size,
                       **model_overrides(config))
  assert isinstance(model, ResNetV2)
  with pytest.raises(AttributeError):
    config.optim.learning_rat = 1.0  # locked


def test_config_rejects_unknown_variant():
  with pytest.raises(ValueError, match="R50x1"):
    load_config("R18x1")


def test_tiny_bit_trains_on_eight_devices_with_the_batch_sharded(train_losses):
  config = base_config("BiT-testing")
  config.data.image_size = 32
  config.batch_size = 16
  config.train.steps = 8
  config.optim.learning_rate = 1e-2
  config.optim.warmup_steps = 1
  config.mesh.data = -1
  config.sharding = "data_parallel"
  # Two classes (bright top or bottom half): after global average pooling, position is only
  # visible through the zero padding at the borders, which takes more steps to learn for 10 bands.
  losses = train_losses(config, steps=8, num_classes=2)
  assert jax.device_count() == 8
  assert all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
