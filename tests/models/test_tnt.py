"""Specification of the TNT family: parameter counts, names, per-patch pixel embedding, config, training."""
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.configuration import base_config, check_values, model_overrides
from vit_jax.data import pp
from vit_jax.models import create_model, list_models
from vit_jax.models.tnt import TransformerInTransformer

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def abstract_params(model):
  size = model.image_size
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  return nn.unbox(variables["params"])


def count(params):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def flat_shapes(params):
  return {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


# timm counts (docs/architectures.md#tnt-variants): 224 px, 1000 classes, without the official
# code's frozen, unused `outer_tokens`.
PUBLISHED = {"TNT-S/16": 23_768_584, "TNT-B/16": 65_428_680, "TNT-test": 75_144}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published_table(name):
  assert count(abstract_params(create_model(name))) == PUBLISHED[name]


def test_s16_tree_has_explicit_names_and_timm_shapes():
  flat = flat_shapes(abstract_params(create_model("TNT-S/16")))
  block = "block_11/"
  assert flat["pixel_embedding/kernel"] == (7, 7, 3, 24)
  assert flat["pixel_pos_embedding"] == (1, 16, 24)  # 4x4 words per 16 px patch
  assert flat["patch_embedding/pixels_norm/scale"] == (16 * 24,)
  assert flat["patch_embedding/dense/bias"] == (384,)
  assert flat["patch_embedding/patch_norm/scale"] == (384,)
  assert flat["cls"] == (1, 1, 384)
  assert flat["patch_pos_embedding"] == (1, 197, 384)
  assert flat[block + "inner_encoder/MultiHeadDotProductAttention_0/query/kernel"] == (24, 4, 6)
  assert flat[block + "inner_encoder/MlpBlock_0/Dense_0/kernel"] == (24, 96)
  assert flat[block + "pixels_to_patch/dense/kernel"] == (384, 384)
  assert flat[block + "outer_encoder/MultiHeadDotProductAttention_0/out/kernel"] == (6, 64, 384)
  assert flat[block + "outer_encoder/MlpBlock_0/Dense_0/kernel"] == (384, 1536)
  assert flat["encoder_norm/scale"] == (384,)
  assert flat["head/kernel"] == (384, 1000)
  # No q/k/v biases at either level, and no bias in the per-block projection.
  assert not [k for k in flat if k.endswith(("query/bias", "key/bias", "value/bias"))]
  assert block + "pixels_to_patch/dense/bias" not in flat


def test_registry_lists_tnt_and_overrides_reach_every_dimension():
  assert {"TNT-S/16", "TNT-B/16", "TNT-test"} <= set(list_models())
  model = create_model(
      "TNT-S/16", num_classes=7, image_size=48, patch_size=8, inner_stride=2, outer_dim=48,
      inner_dim=12, num_layers=1, outer_num_heads=3, inner_num_heads=2, outer_mlp_ratio=2.0,
      inner_mlp_ratio=3.0, stochastic_depth=0.1)
  flat = flat_shapes(abstract_params(model))
  assert flat["pixel_pos_embedding"] == (1, 16, 12)
  assert flat["patch_pos_embedding"] == (1, 37, 48)
  assert flat["block_0/inner_encoder/MlpBlock_0/Dense_0/kernel"] == (12, 36)
  assert flat["block_0/inner_encoder/MultiHeadDotProductAttention_0/key/kernel"] == (12, 2, 6)
  assert flat["block_0/outer_encoder/MlpBlock_0/Dense_0/kernel"] == (48, 96)
  assert flat["head/kernel"] == (48, 7) and "block_1/outer_encoder/LayerNorm_0/scale" not in flat
  tnt = create_model("TNT-B/16")
  assert (tnt.outer_dim, tnt.inner_dim, tnt.num_layers, tnt.outer_num_heads, tnt.inner_num_heads,
          tnt.layer_norm_epsilon, tnt.gelu_approximate) == (640, 40, 12, 10, 4, 1e-5, False)
  assert tnt.interface.pooling == "token" and not tnt.interface.representation_layer


def test_every_parameter_carries_logical_axis_names():
  model = create_model("TNT-test", num_classes=10)
  boxed = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  for leaf in leaves:
    assert len(leaf.names) == len(leaf.value.shape)


def random_params(model, seed=0):
  """Random params in the model's tree, without compiling the initializers (slow on CPU)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: rng.normal(scale=0.5, size=leaf.shape).astype(leaf.dtype),
                      abstract_params(model))


@pytest.fixture(scope="module")
def tiny():
  """(model, params, images, forward); forward(params, images) -> (logits, words per patch)."""
  model = create_model("TNT-test", num_classes=5)
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

  @jax.jit
  def forward(params, images):
    logits, state = model.apply({"params": params}, images, capture_intermediates=True)
    return logits, state["intermediates"]["pixel_embedding"]["__call__"][0]

  return model, random_params(model), images, forward


def test_logits_are_float32_per_class(tiny):
  _, params, images, forward = tiny
  logits, _ = forward(params, images)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits)) and np.ptp(np.asarray(logits)) > 0


def test_words_of_a_patch_see_only_that_patch(tiny):
  """Each patch is convolved with its own zero padding: a 7x7 kernel over the whole image would leak
  pixels of the neighbouring patch into the border words."""
  _, params, images, forward = tiny
  changed = images.at[:, 8:16, 0:8].add(1.0)  # patch (row 1, col 0) = index 4 of the 4x4 grid
  (_, before), (_, after) = forward(params, images), forward(params, changed)
  assert before.shape == (2 * 16, 4, 4, 8)  # (batch * patches, 4x4 words, inner_dim)
  differs = np.any(np.abs(np.asarray(before - after)) > 0, axis=(1, 2, 3)).reshape(2, 16)
  np.testing.assert_array_equal(differs, np.eye(16, dtype=bool)[[4, 4]])


def test_stochastic_depth_only_acts_in_training(tiny):
  """Drop-path on the inner and outer branches (dropout is the shared EncoderBlock's, tested with ViT)."""
  _, params, images, forward = tiny
  model = create_model("TNT-test", num_classes=5, stochastic_depth=0.5)
  evaluated = jax.jit(model.apply)({"params": params}, images)  # needs no rng: nothing is dropped
  np.testing.assert_allclose(evaluated, forward(params, images)[0], atol=1e-5)
  train = jax.jit(lambda rng: model.apply({"params": params}, images, train=True,
                                          rngs={"dropout": rng}))
  assert not np.allclose(train(jax.random.key(1)), train(jax.random.key(2)))


def test_bfloat16_compute_keeps_float32_params(tiny):
  _, params, images, forward = tiny
  model = create_model("TNT-test", num_classes=5, dtype="bfloat16")
  logits = jax.jit(model.apply)({"params": params}, images)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, forward(params, images)[0], atol=0.5)


def test_wrong_resolution_is_a_clear_error(tiny):
  model, params, _, _ = tiny
  with pytest.raises(ValueError, match="built for 32x32 images but got 64x64"):
    model.apply({"params": params}, jnp.zeros((1, 64, 64, 3)))


def load_config(arg):
  spec = importlib.util.spec_from_file_location("tnt_config", CONFIGS / "tnt.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("variant,name", [("tnt_s", "TNT-S/16"), ("tnt_b", "TNT-B/16")])
def test_config_is_the_official_imagenet_recipe(variant, name):
  config = load_config(variant)
  assert config.model_name == name and config.data.name == "imagenet2012"
  assert (config.batch_size, config.optim.name, config.optim.learning_rate,
          config.optim.weight_decay, config.model.stochastic_depth) == (1024, "adamw", 1e-3, 0.05, 0.1)
  assert (config.train.epochs, config.optim.warmup_steps, config.optim.decay,
          config.optim.end_learning_rate, config.optim.grad_clip_norm) == (300, 6255, "cosine", 1e-5, 0)
  # DeiT's augmentation (docs/recipes.md#tnt): RandAugment m9, smoothed targets mixed by mixup 0.8
  # or cutmix 1.0, one per batch with even odds, and the EMA of the weights.
  assert "|flip_lr|randaug(2, 9)|" in config.data.pp_train
  assert config.data.pp_train.endswith("|onehot(smoothing=0.1)") and not config.train.label_smoothing
  assert config.data.pp_batch == "mixup_or_cutmix(0.8, 1.0)" and config.optim.ema_decay == 0.99996
  pp.build_batch(config.data.pp_batch)  # a registered op with valid arguments (switch_prob 0.5)
  check_values(config)
  model = create_model(config.model_name, num_classes=1000, image_size=config.data.image_size,
                       **model_overrides(config))
  assert isinstance(model, TransformerInTransformer) and model.stochastic_depth == 0.1
  with pytest.raises(AttributeError):
    config.optim.learning_rat = 1.0  # locked


def test_config_rejects_unknown_variant():
  with pytest.raises(ValueError, match="tnt_s"):
    load_config("tnt_xl")


def test_trains_on_eight_devices_with_a_sharded_batch(train_losses):
  config = base_config("TNT-test")
  config.data.image_size = 32
  config.batch_size = 16
  config.train.steps = 8
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 1
  config.optim.weight_decay = 0.05
  losses = train_losses(config, steps=8)
  assert jax.device_count() == 8
  assert all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
