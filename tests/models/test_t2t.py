"""Specification of T2T-ViT: published parameter counts, the soft split, the fixed tables, training."""
import functools
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.configuration import check_values
from vit_jax.data import pp
from vit_jax.models import create_model, list_models
from vit_jax.models.t2t import soft_split, sinusoid_table

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"

# docs/architectures.md#t2t-variants, 224 px, 1000 classes: (all, trainable). "all" counts what the
# official model.parameters() holds: the trainable weights plus the fixed sinusoid table (197 x D,
# which we compute instead of storing) plus, for the Performer, the two fixed (32, 64) matrices `w`
# (which we keep in the 'constants' collection). Our 'params' collection is exactly the trainable
# column.
PUBLISHED = {
    "T2T-ViT-7": (4_310_222, 4_255_694),
    "T2T-ViT-10": (5_889_230, 5_834_702),
    "T2T-ViT-12": (6_941_902, 6_887_374),
    "T2T-ViT-14": (21_545_550, 21_465_806),
    "T2T-ViT-19": (39_177_422, 39_085_070),
    "T2T-ViT-24": (64_105_934, 64_000_974),
    "T2T-ViT_t-14": (21_541_070, 21_465_422),
    "T2T-ViT_t-19": (39_172_942, 39_084_686),
    "T2T-ViT_t-24": (64_101_454, 64_000_590),
}


def abstract_variables(model, boxed=False):
  size = model.image_size
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  return dict(variables) if boxed else nn.unbox(dict(variables))


def count(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def test_registry_has_the_official_names_and_tiny_test_variants():
  assert set(PUBLISHED) | {"T2T-ViT-test", "T2T-ViT_t-test"} <= set(list_models())
  t14 = create_model("T2T-ViT_t-14")
  assert (t14.hidden_size, t14.num_layers, t14.num_heads, t14.mlp_dim, t14.token_dim) == (
      384, 14, 6, 1152, 64)
  assert t14.tokens_type == "transformer" and create_model("T2T-ViT-14").tokens_type == "performer"


def test_overrides_reach_every_architecture_dimension():
  model = create_model("T2T-ViT-14", num_classes=10, image_size=64, hidden_size=48, num_layers=1,
                       num_heads=3, mlp_dim=96, token_dim=8, tokens_type="transformer",
                       attention_scale="embed_dim")
  params = abstract_variables(model)["params"]
  assert params["tokens_to_token"]["attention1"]["qkv"]["kernel"].shape == (147, 24)
  assert params["tokens_to_token"]["project"]["kernel"].shape == (72, 48)
  assert params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"].shape == (48, 96)
  assert "encoderblock_1" not in params["Transformer"] and params["head"]["kernel"].shape == (48, 10)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published_table(name):
  model = create_model(name)
  variables = abstract_variables(model)
  published_all, published_trainable = PUBLISHED[name]
  assert count(variables["params"]) == published_trainable
  fixed_table = ((model.image_size // 16) ** 2 + 1) * model.hidden_size
  fixed_w = count(variables.get("constants", {}))
  assert fixed_w == (2 * 32 * 64 if model.tokens_type == "performer" else 0)
  assert count(variables["params"]) + fixed_w + fixed_table == published_all


def test_t2t_vit_14_at_384_keeps_the_same_parameters():
  """Only the (computed) position table grows: 21.7M 'all' in the README, same trainable weights."""
  variables = abstract_variables(create_model("T2T-ViT-14", image_size=384))
  assert count(variables["params"]) == 21_465_806
  assert count(variables["params"]) + count(variables["constants"]) + 577 * 384 == 21_691_470


def torch_unfold(images_nchw, kernel, stride, padding):
  """Reference torch.nn.Unfold: (B, C, H, W) -> (B, C * k * k, L), features (c, kh, kw), L row-major."""
  x = np.pad(images_nchw, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  b, c, h, w = x.shape
  out_h, out_w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
  columns = np.zeros((b, c, kernel, kernel, out_h, out_w), x.dtype)
  for i in range(kernel):
    for j in range(kernel):
      columns[:, :, i, j] = x[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
  return columns.reshape(b, c * kernel * kernel, out_h * out_w)


@pytest.mark.parametrize("kernel, stride, padding, size", [(7, 4, 2, 20), (3, 2, 1, 7)])
def test_soft_split_is_torch_unfold_and_conv_general_dilated_patches(kernel, stride, padding, size):
  images = np.random.RandomState(0).randn(2, size, size + 4, 5).astype(np.float32)
  grid = np.asarray(soft_split(jnp.asarray(images), kernel, stride, padding))
  tokens = grid.reshape(2, -1, grid.shape[-1])
  expected = torch_unfold(images.transpose(0, 3, 1, 2), kernel, stride, padding).transpose(0, 2, 1)
  np.testing.assert_array_equal(tokens, expected)
  patches = jax.lax.conv_general_dilated_patches(
      jnp.asarray(images), (kernel, kernel), (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(grid, patches, atol=1e-6)  # same (c, kh, kw) feature order


def test_sinusoid_table_follows_the_formula():
  table = sinusoid_table(5, 6)[0]
  pos, j = 3, 4
  np.testing.assert_allclose(table[pos, j], np.sin(pos / 10000 ** (4 / 6)), rtol=1e-6)
  np.testing.assert_allclose(table[pos, j + 1], np.cos(pos / 10000 ** (4 / 6)), rtol=1e-6)
  np.testing.assert_array_equal(table[0, 1::2], 1.0)


@functools.lru_cache
def _tiny_variables(name: str):
  model = create_model(name, num_classes=5)
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  return jax.jit(lambda x: nn.unbox(model.init(jax.random.key(0), x, train=False)))(images), images


def tiny(name="T2T-ViT-test", **overrides):
  """A 32 px, 5-class model with the given overrides, its variables (initialized once per name: the
  overrides used here do not change the tree) and two images."""
  variables, images = _tiny_variables(name)
  model = create_model(name, **{"num_classes": 5, **overrides})
  return model, jax.tree.map(jnp.copy, variables), images


def test_performer_w_is_a_fixed_scaled_orthogonal_matrix_outside_params():
  _, variables, _ = tiny()
  assert set(variables) == {"params", "constants"}
  for i in (1, 2):
    assert "w" not in variables["params"]["tokens_to_token"][f"attention{i}"]
    w = np.asarray(variables["constants"]["tokens_to_token"][f"attention{i}"]["w"])
    assert w.shape == (8, 16)  # m = token_dim * 0.5 random features
    np.testing.assert_allclose(w @ w.T, 8 * np.eye(8), atol=1e-4)


def test_transformer_t2t_has_no_constants():
  assert set(abstract_variables(create_model("T2T-ViT_t-test"))) == {"params"}


def test_new_resolution_reuses_every_weight_and_recomputes_positions():
  _, variables, _ = tiny()
  big = create_model("T2T-ViT-test", num_classes=5, image_size=64)
  assert jax.tree.map(jnp.shape, abstract_variables(big)) == jax.tree.map(jnp.shape, variables)
  logits = jax.jit(big.apply)(variables, jnp.ones((1, 64, 64, 3)))
  assert logits.shape == (1, 5) and bool(jnp.all(jnp.isfinite(logits)))


def test_every_parameter_carries_logical_axis_names():
  boxed = abstract_variables(create_model("T2T-ViT-test"), boxed=True)
  for collection in ("params", "constants"):
    leaves = jax.tree.leaves(boxed[collection],
                             is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
    assert all(len(leaf.names) == len(leaf.value.shape) for leaf in leaves)


def test_applying_a_performer_without_its_constants_is_a_clear_error():
  model, variables, images = tiny()
  with pytest.raises(ValueError, match="'constants'"):
    jax.eval_shape(model.apply, {"params": variables["params"]}, images)


def test_dropout_acts_only_in_training_and_training_leaves_the_constants_unchanged():
  """Applied as the trainer does (mutable=list(model_state), gradients of 'params' only), the
  Performer's `w` is neither rewritten by the forward pass nor reachable by the optimizer."""
  model, variables, images = tiny(dropout_rate=0.3, stochastic_depth=0.3)
  params, model_state = variables["params"], {"constants": variables["constants"]}
  run = jax.jit(lambda rng, train: model.apply(
      {"params": params, **model_state}, images, train=train, rngs={"dropout": rng},
      mutable=list(model_state)), static_argnums=1)
  (eval_a, _), (eval_b, _) = run(jax.random.key(1), False), run(jax.random.key(2), False)
  np.testing.assert_array_equal(eval_a, eval_b)
  (train_a, state_a), (train_b, _) = run(jax.random.key(1), True), run(jax.random.key(2), True)
  assert not np.allclose(train_a, train_b)
  assert jax.tree.all(jax.tree.map(np.array_equal, state_a, model_state))


def test_num_classes_zero_returns_the_class_token_feature():
  model, variables, images = tiny(num_classes=0)
  del variables["params"]["head"]
  features = jax.eval_shape(model.apply, variables, images)
  assert features.shape == (2, 32) and features.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_variables():
  model, variables, images = tiny(dtype="bfloat16")
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits = jax.jit(model.apply)(variables, images)
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("override, message", [
    (dict(tokens_type="linear"), "tokens_type must be 'performer' or 'transformer'"),
    (dict(attention_scale="dim"), "attention_scale must be 'head_dim' or 'embed_dim'"),
])
def test_unknown_options_are_rejected(override, message):
  model, _, images = tiny(**override)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def test_wrong_resolution_is_a_clear_error():
  model, variables, _ = tiny()
  with pytest.raises(ValueError, match="built for 32x32 images but got 64x64"):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 64, 64, 3)))


def load_config(variant):
  spec = importlib.util.spec_from_file_location("t2t_config", CONFIGS / "t2t.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.mark.parametrize("variant, name, learning_rate, weight_decay", [
    ("t2t_vit_7", "T2T-ViT-7", 1e-3, 0.03), ("t2t_vit_14", "T2T-ViT-14", 5e-4, 0.05),
    ("t2t_vit_t_24", "T2T-ViT_t-24", 5e-4, 0.065)])
def test_config_picks_the_variant_and_the_paper_recipe(variant, name, learning_rate, weight_decay):
  config = load_config(variant)
  assert config.is_locked and config.model_name == name
  assert (config.data.source, config.data.name, config.batch_size) == ("tfds", "imagenet2012", 512)
  assert (config.optim.name, config.optim.learning_rate, config.optim.weight_decay) == (
      "adamw", learning_rate, weight_decay)
  assert config.model.stochastic_depth == 0.1 and config.optim.grad_clip_norm == 0
  assert (config.train.epochs, config.optim.warmup_steps, config.optim.end_learning_rate) == (
      300, 25_023, 1e-5)
  # main.py's augmentation (docs/recipes.md#t2t): RandAugment m9, label smoothing 0.1 in the targets
  # that mixup 0.8 or cutmix 1.0 mixes, one per batch with even odds, and the EMA of the weights.
  assert "|flip_lr|randaug(2, 9)|" in config.data.pp_train
  assert config.data.pp_train.endswith("|onehot(smoothing=0.1)") and not config.train.label_smoothing
  assert config.data.pp_batch == "mixup_or_cutmix(0.8, 1.0)" and config.optim.ema_decay == 0.99996
  pp.build_batch(config.data.pp_batch)  # a registered op with valid arguments (switch_prob 0.5)
  check_values(config)


def test_config_rejects_unknown_variant():
  with pytest.raises(ValueError, match="t2t_vit_14"):
    load_config("t2t_vit_15")


@pytest.mark.parametrize("name", ["T2T-ViT-test", "T2T-ViT_t-test"])
def test_tiny_t2t_trains_on_eight_devices_with_the_batch_sharded(train_losses, name):
  config = load_config("t2t_vit_t_14" if "_t" in name else "t2t_vit_14")
  config.model_name = name
  config.model.stochastic_depth = 0.0
  config.data.image_size = 32
  config.batch_size = 16
  config.train.epochs = 0.0
  config.train.steps = 10
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 1
  config.optim.weight_decay = 0.0
  config.optim.ema_decay = 0.0  # the recipe's EMA is not what this test trains
  losses = train_losses(config, steps=10)
  assert all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
