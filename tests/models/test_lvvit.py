"""Specification of LV-ViT: published sizes, the BatchNorm stem, the eval output, MixToken, training."""
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import parallel
from vit_jax.configuration import base_config, total_steps
from vit_jax.models import create_model
from vit_jax.models import lvvit
from vit_jax.train import build
from vit_jax.train.state import TrainState

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def abstract_variables(model):
  size = model.image_size
  return nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)))


def count(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


# docs/architectures.md#lvvit-variants (official code and README), 1000 classes; aux_head and BN
# affines included.
PUBLISHED_EXACT = {
    ("LV-ViT-T", 224): 8_534_720, ("LV-ViT-S", 224): 26_151_824, ("LV-ViT-S", 384): 26_297_744,
    ("LV-ViT-M", 224): 55_830_544,
}
PUBLISHED_MILLIONS = {  # given to two decimals
    ("LV-ViT-M", 384): 56.03, ("LV-ViT-M", 448): 56.13,
    ("LV-ViT-L", 448): 150.47, ("LV-ViT-L", 512): 150.66,
}


@pytest.mark.parametrize("name,size", sorted(PUBLISHED_EXACT))
def test_parameter_count_matches_published_table(name, size):
  params = abstract_variables(create_model(name, image_size=size))["params"]
  assert count(params) == PUBLISHED_EXACT[(name, size)]


@pytest.mark.parametrize("name,size", sorted(PUBLISHED_MILLIONS))
def test_parameter_count_matches_published_millions(name, size):
  params = abstract_variables(create_model(name, image_size=size))["params"]
  assert round(count(params) / 1e6, 2) == PUBLISHED_MILLIONS[(name, size)]


def test_s_tree_has_stem_batch_stats_and_both_heads():
  variables = abstract_variables(create_model("LV-ViT-S"))
  assert set(variables) == {"params", "batch_stats"}
  params = variables["params"]
  assert params["stem"]["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert "bias" not in params["stem"]["conv1"]
  assert params["stem"]["proj"]["kernel"].shape == (8, 8, 64, 384)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 197, 384)
  attention = params["Transformer"]["encoderblock_15"]["MultiHeadDotProductAttention_0"]
  assert attention["query"] == {"kernel": jax.ShapeDtypeStruct((384, 6, 64), jnp.float32)}
  assert params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"].shape == (384, 1152)
  assert params["head"]["kernel"].shape == params["aux_head"]["kernel"].shape == (384, 1000)
  stats = variables["batch_stats"]["stem"]
  assert sorted(stats) == ["bn1", "bn2", "bn3"]
  assert stats["bn3"]["var"].shape == (64,)


def test_large_uses_the_128_channel_stem():
  params = abstract_variables(create_model("LV-ViT-L", image_size=448))["params"]
  assert params["stem"]["conv2"]["kernel"].shape == (3, 3, 128, 128)


def test_every_parameter_carries_logical_axis_names():
  model = create_model("LV-ViT-test")
  boxed = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  assert all(len(leaf.names) == len(leaf.value.shape) for leaf in leaves)


def numpy_variables(model, seed=0):
  """Random variables for `model` drawn with numpy (a jitted flax init would spend seconds compiling
  the random number generators); BatchNorm variances are kept positive."""
  rng = np.random.RandomState(seed)

  def draw(path, leaf):
    if getattr(path[-1], "key", None) == "var":
      return (1.0 + 0.3 * rng.uniform(size=leaf.shape)).astype(np.float32)
    return (0.2 * rng.normal(size=leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, abstract_variables(model))


def jitted(model, **kwargs):
  """model.apply(variables, images, rng) compiled once, with fixed keyword arguments (train, mutable)."""
  return jax.jit(lambda variables, images, rng=jax.random.key(0): model.apply(
      variables, images, rngs={"dropout": rng}, **kwargs))


@pytest.fixture(scope="module")
def tiny():
  """Variables of the test variant and a batch of 4 images (32x32)."""
  variables = numpy_variables(create_model("LV-ViT-test"))
  images = np.random.RandomState(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
  return variables, images


def test_eval_output_is_class_logits_plus_half_the_max_token_logits(tiny):
  variables, images = tiny
  logits = jitted(create_model("LV-ViT-test"))(variables, images)
  dense = jitted(create_model("LV-ViT-test", return_dense=True))(variables, images)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert dense.token_logits.shape == (4, 16, 10)
  expected = dense.cls_logits + 0.5 * dense.token_logits.max(axis=1)
  np.testing.assert_allclose(logits, expected, atol=1e-6)
  one_alone = jitted(create_model("LV-ViT-test"))(variables, images[:1])
  np.testing.assert_allclose(one_alone, logits[:1], atol=1e-5)  # running statistics: no batch effects


def test_training_uses_batch_statistics_and_updates_them_with_momentum_0p1(tiny):
  variables, images = tiny
  model = create_model("LV-ViT-test")
  logits, updated = jitted(model, train=True, mutable=["batch_stats"])(variables, images)
  dense, _ = jitted(create_model("LV-ViT-test", return_dense=True), train=True,
                    mutable=["batch_stats"])(variables, images)
  # Training optimizes the output that is evaluated.
  np.testing.assert_allclose(logits, dense.cls_logits + 0.5 * dense.token_logits.max(1), atol=1e-6)
  conv1 = nn.Conv(8, (7, 7), strides=2, padding=3, use_bias=False).apply(
      {"params": variables["params"]["stem"]["conv1"]}, images)
  old, new = variables["batch_stats"]["stem"]["bn1"], updated["batch_stats"]["stem"]["bn1"]
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * conv1.mean((0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * conv1.var((0, 1, 2)), rtol=1e-4)


def test_dropout_and_stochastic_depth_only_act_in_training(tiny):
  variables, images = tiny
  model = create_model("LV-ViT-test", dropout_rate=0.3, stochastic_depth=0.3)
  evaluate = jitted(model)
  np.testing.assert_array_equal(evaluate(variables, images, jax.random.key(1)),
                                evaluate(variables, images, jax.random.key(2)))
  train = jitted(model, train=True, mutable=["batch_stats"])
  assert not np.allclose(train(variables, images, jax.random.key(1))[0],
                         train(variables, images, jax.random.key(2))[0])


def test_mixtoken_boxes_follow_the_official_sampler():
  keys = jax.random.split(jax.random.key(0), 400)
  boxes = np.asarray(jax.jit(jax.vmap(lambda k: lvvit.sample_mixtoken_box(k, 14, 14)))(keys))
  assert boxes.dtype == np.int32 and boxes.min() >= 0 and boxes.max() <= 14
  assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
  unclipped = (boxes[:, 0] > 0) & (boxes[:, 2] < 14) & (boxes[:, 1] > 0) & (boxes[:, 3] < 14)
  sides = np.concatenate([boxes[unclipped, 2] - boxes[unclipped, 0],
                          boxes[unclipped, 3] - boxes[unclipped, 1]])
  assert np.all(sides % 2 == 0)  # centre +- cut // 2
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  assert 0 < area.mean() < 196 / 2  # E[cut^2] = 196/2 before flooring and clipping


def test_swap_takes_the_box_from_the_reversed_batch_and_is_its_own_inverse():
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
  box = jnp.array([1, 0, 3, 2])
  mixed = lvvit.swap_box_with_reversed_batch(x, box)
  np.testing.assert_array_equal(mixed[:, 1:3, 0:2], x[::-1, 1:3, 0:2])
  outside = np.ones((4, 4), bool)
  outside[1:3, 0:2] = False
  np.testing.assert_array_equal(np.asarray(mixed)[:, outside], np.asarray(x)[:, outside])
  np.testing.assert_array_equal(lvvit.swap_box_with_reversed_batch(mixed, box), x)
  assert float(lvvit.mixtoken_lam(box, 16)) == 1 - 4 / 16


def test_mixtoken_over_the_whole_grid_sends_tokens_back_to_their_own_image(tiny):
  """A full box: every token comes from the reversed batch, so the class logits are those of the
  reversed batch, while the swapped-back token logits are those of each example's own image."""
  variables, images = tiny
  full = jnp.array([0, 0, 4, 4])
  mixing = create_model("LV-ViT-test", return_dense=True, mix_token=True)
  mixed, _ = jitted(mixing, train=True, mix_box=full, mutable=["batch_stats"])(variables, images)
  plain = create_model("LV-ViT-test", return_dense=True)
  reference, _ = jitted(plain, train=True, mutable=["batch_stats"])(variables, images[::-1])
  np.testing.assert_allclose(mixed.cls_logits, reference.cls_logits, atol=1e-5)
  np.testing.assert_allclose(mixed.token_logits, reference.token_logits[::-1], atol=1e-5)
  np.testing.assert_array_equal(mixed.mix_box, full)


def test_mixtoken_draws_a_box_in_training_only(tiny):
  variables, images = tiny
  model = create_model("LV-ViT-test", return_dense=True, mix_token=True)
  train = jitted(model, train=True, mutable=["batch_stats"])
  boxes = [train(variables, images, jax.random.key(seed))[0].mix_box for seed in range(6)]
  assert any(np.asarray(box).any() for box in boxes)
  np.testing.assert_array_equal(jitted(model)(variables, images).mix_box, 0)


def test_mixtoken_training_without_dense_outputs_is_an_error_and_evaluation_ignores_it(tiny):
  variables, images = tiny
  model = create_model("LV-ViT-test", mix_token=True)
  with pytest.raises(ValueError, match="trains with return_dense=True"):
    model.apply(variables, images, train=True, mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(0)})
  np.testing.assert_array_equal(model.apply(variables, images),
                                create_model("LV-ViT-test").apply(variables, images))


def test_bad_inputs_are_clear_errors(tiny):
  variables, _ = tiny
  model = create_model("LV-ViT-test")
  with pytest.raises(ValueError, match="built for 32x32 images but got 64x64"):
    model.apply(variables, jnp.zeros((1, 64, 64, 3)))
  with pytest.raises(ValueError, match="patch_size must be even"):
    create_model("LV-ViT-test", patch_size=7, image_size=28).init(
        jax.random.key(0), jnp.zeros((1, 28, 28, 3)))


def test_bfloat16_compute_keeps_float32_params_and_logits(tiny):
  variables, images = tiny
  logits = jitted(create_model("LV-ViT-test", dtype="bfloat16"))(variables, images)
  assert logits.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_scanned_layers_compute_the_same_function(tiny):
  variables, images = tiny
  unrolled = jitted(create_model("LV-ViT-test"))(variables, images)
  encoder = dict(variables["params"]["Transformer"])
  blocks = [encoder.pop(f"encoderblock_{i}") for i in range(2)]
  encoder["encoderblock"] = jax.tree.map(lambda *layers: np.stack(layers), *blocks)
  scanned_variables = {**variables, "params": {**variables["params"], "Transformer": encoder}}
  scanned = jitted(create_model("LV-ViT-test", scan_layers=True))(scanned_variables, images)
  np.testing.assert_allclose(scanned, unrolled, atol=1e-5)


def load_config_file(name, arg):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("variant,name,drop_path,learning_rate,randaug", [
    ("lvvit_s", "LV-ViT-S", 0.1, 1.6e-3, "randaug(2, 9)"),
    ("lvvit_m", "LV-ViT-M", 0.2, 1.6e-3, "randaug(2, 9)"),
    ("lvvit_l", "LV-ViT-L", 0.3, 1e-3, "randaug(3, 9)")])
def test_imagenet_configs_build_their_variant_with_the_paper_recipe(variant, name, drop_path,
                                                                    learning_rate, randaug):
  config = load_config_file("lvvit", variant)
  assert config.is_locked and config.model_name == name
  assert config.data.name == "imagenet2012" and config.data.image_size == 224
  assert config.batch_size == 1024 and config.train.epochs == 300
  assert config.optim.weight_decay == 0.05 and config.train.label_smoothing == 0.1
  assert config.optim.name == "adamw" and config.optim.learning_rate == learning_rate
  assert config.optim.grad_clip_norm == 0 and config.data.pp_batch == ""  # MixToken, no mixup
  assert randaug in config.data.pp_train and "flip_lr" in config.data.pp_train
  assert config.loss == "token_label" and config.model.mix_token
  assert config.loss_options.to_dict() == {"dense_weight": 0.5, "official_box_order": True}
  assert total_steps(config, 1_281_167) == 375_342
  model = build.build_model(config, num_classes=1000)
  assert model.stochastic_depth == drop_path
  if name in ("LV-ViT-S", "LV-ViT-M"):
    assert count(abstract_variables(model)["params"]) == PUBLISHED_EXACT[(name, 224)]


def test_unknown_config_variant_is_an_error():
  with pytest.raises(ValueError, match="lvvit_s"):
    load_config_file("lvvit", "lvvit_xl")


def tiny_config():
  config = base_config("LV-ViT-test")
  config.data.image_size = 32
  config.batch_size = 16
  config.train.steps = 12
  config.optim.learning_rate = 1e-2
  config.optim.weight_decay = 0.05
  return config


def test_tiny_lvvit_trains_on_eight_devices_with_a_sharded_batch(train_losses):
  assert len(jax.devices()) == 8
  losses = train_losses(tiny_config(), steps=12)
  assert all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3])


def test_train_step_updates_the_batch_statistics_of_a_sharded_batch():
  config = tiny_config()
  setup = build.setup(config, num_classes=10, train_examples=16)
  variables = numpy_variables(setup.model)
  params = variables.pop("params")
  state = jax.device_put(TrainState(
      step=np.zeros((), np.int32), params=params, opt_state=setup.tx.init(params),
      rng=jax.random.key_data(jax.random.key(0)), model_state=variables), setup.state_shardings)
  images = np.random.RandomState(0).normal(size=(16, 32, 32, 3)).astype(np.float32)
  batch = {"image": images, "label": np.arange(16, dtype=np.int32) % 10}
  with parallel.activate(setup.mesh, setup.rules):
    batch = parallel.global_batch(batch, setup.mesh, setup.rules)
    assert batch["image"].sharding.spec[0] is not None  # the batch really is split over devices
    before = jax.device_get(state.model_state)
    new_state, metrics = setup.train_step(state, batch)  # donates `state`
  assert np.isfinite(float(metrics["loss"]))
  after = jax.device_get(new_state.model_state)
  assert set(after) == {"batch_stats"}
  for bn in ("bn1", "bn2", "bn3"):
    assert not np.allclose(after["batch_stats"]["stem"][bn]["mean"],
                           before["batch_stats"]["stem"][bn]["mean"])
