"""Specification of the optimizer: schedules, optimizers by name, per-parameter rules, EMA weights."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import parallel
from vit_jax.configuration import optim_config
from vit_jax.models import create_model
from vit_jax.train import optim
from vit_jax.train.optim import ema_params, make_optimizer, map_params, register_optimizer
from vit_jax.train.param_rules import decay_mask, layer_decay_multipliers
from vit_jax.train.schedules import learning_rate_schedule


def config(**kw):
  cfg = optim_config()
  cfg.update(kw)
  return cfg


def vit_micro_params(**overrides):
  model = create_model("ViT-micro/4", num_classes=3, **overrides)
  return nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)["params"])


# Schedules.

def test_linear_warmup_then_cosine_to_the_end_value():
  schedule = learning_rate_schedule(config(learning_rate=1.0, warmup_steps=10, decay="cosine",
                                           end_learning_rate=0.1), total_steps=110)
  np.testing.assert_allclose(
      [schedule(s) for s in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6)


def test_linear_decay_reaches_the_end_value():
  schedule = learning_rate_schedule(
      config(learning_rate=1e-3, warmup_steps=0, decay="linear", end_learning_rate=1e-5), 100)
  np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)],
                             [1e-3, 5.05e-4, 1e-5], rtol=1e-5)


def test_constant_after_warmup():
  schedule = learning_rate_schedule(config(learning_rate=0.2, warmup_steps=4, decay="constant"), 50)
  np.testing.assert_allclose([schedule(2), schedule(4), schedule(49)], [0.1, 0.2, 0.2], rtol=1e-6)


def test_step_decay_divides_by_the_factor_at_each_boundary_fraction_of_the_total_steps():
  # BiT: warmup, then divide by 10 at epochs 30, 60 and 80 of 90 (here 9 steps per epoch).
  schedule = learning_rate_schedule(config(learning_rate=0.1, warmup_steps=9, decay="steps",
                                           boundaries=(30 / 90, 60 / 90, 80 / 90), decay_factor=0.1),
                                    total_steps=810)
  steps = [0, 9, 269, 270, 539, 540, 719, 720, 809]
  np.testing.assert_allclose([schedule(s) for s in steps],
                             [0.0, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-5)


def test_bad_schedules_are_rejected():
  with pytest.raises(ValueError, match="warmup_steps"):
    learning_rate_schedule(config(warmup_steps=100), 100)
  with pytest.raises(ValueError, match="decay must be"):
    learning_rate_schedule(config(decay="step"), 100)
  with pytest.raises(ValueError, match="needs optim.boundaries"):
    learning_rate_schedule(config(decay="steps"), 100)
  with pytest.raises(ValueError, match="optim.boundaries"):  # steps, not fractions
    learning_rate_schedule(config(decay="steps", boundaries=(30.0, 60.0)), 100)
  with pytest.raises(ValueError, match="after the 10 warmup steps"):
    learning_rate_schedule(config(decay="steps", boundaries=(0.05, 0.5), warmup_steps=10), 100)
  with pytest.raises(ValueError, match="only read by optim.decay='steps'"):
    learning_rate_schedule(config(decay="cosine", boundaries=(0.5,)), 100)


# Optimizers by name.

def one_update(cfg, params, grads):
  tx, _ = make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_weight_decay_skips_biases_norms_and_embeddings():
  params = {"embedding": {"kernel": jnp.ones((2, 2, 3, 4)), "bias": jnp.ones(4)},
            "cls": jnp.ones((1, 1, 4)),
            "Transformer": {"posembed_input": {"pos_embedding": jnp.ones((1, 5, 4))},
                            "encoder_norm": {"scale": jnp.ones(4), "bias": jnp.ones(4)}},
            "head": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
  mask = decay_mask(params)
  assert mask["embedding"]["kernel"] and mask["head"]["kernel"]
  assert not any([mask["embedding"]["bias"], mask["cls"], mask["head"]["bias"],
                  mask["Transformer"]["posembed_input"]["pos_embedding"],
                  mask["Transformer"]["encoder_norm"]["scale"]])


def test_sgd_first_step_is_minus_lr_times_gradient():
  params = {"w": {"kernel": jnp.ones((2, 2))}}
  grads = {"w": {"kernel": jnp.full((2, 2), 0.5)}}
  updates = one_update(config(name="sgd", learning_rate=0.1, grad_clip_norm=0.0), params, grads)
  np.testing.assert_allclose(updates["w"]["kernel"], -0.05)


def test_adamw_decays_kernels_but_not_biases():
  params = {"d": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates = one_update(config(name="adamw", learning_rate=0.1, weight_decay=0.5), params, zeros)
  np.testing.assert_allclose(updates["d"]["kernel"], -0.05, rtol=1e-6)
  np.testing.assert_allclose(updates["d"]["bias"], 0.0)


def test_adam_adds_l2_to_the_gradient_before_the_moments_and_adamw_decouples_it():
  """With a zero gradient, adam's L2 term wd*p is normalised by the moments (first step: -lr, whatever
  wd is); adamw's decay bypasses them (-lr * wd * p)."""
  params = {"d": {"kernel": jnp.full((2, 2), 2.0)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for wd in (0.5, 0.01):
    adam = one_update(config(name="adam", learning_rate=0.1, weight_decay=wd), params, zeros)
    adamw = one_update(config(name="adamw", learning_rate=0.1, weight_decay=wd), params, zeros)
    np.testing.assert_allclose(adam["d"]["kernel"], -0.1, rtol=1e-5)
    np.testing.assert_allclose(adamw["d"]["kernel"], -0.1 * wd * 2.0, rtol=1e-6)
  # Without weight decay the two are the same optimizer.
  grads = {"d": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]])}}
  np.testing.assert_allclose(one_update(config(name="adam"), params, grads)["d"]["kernel"],
                             one_update(config(name="adamw"), params, grads)["d"]["kernel"])


def test_global_norm_clipping_bounds_the_step():
  params = {"w": {"kernel": jnp.ones((2, 2))}}
  grads = {"w": {"kernel": jnp.full((2, 2), 100.0)}}
  updates = one_update(config(name="sgd", learning_rate=1.0, grad_clip_norm=1.0), params, grads)
  np.testing.assert_allclose(float(jnp.linalg.norm(updates["w"]["kernel"])), 1.0, rtol=1e-5)


def test_unknown_optimizer_is_rejected_with_the_known_names():
  with pytest.raises(ValueError, match="optim.name must be one of adam, adamw, sgd or 'optax:<name>'"):
    make_optimizer(config(name="lamb"), 10)
  with pytest.raises(ValueError, match="optax has no function 'lamb2'"):
    make_optimizer(config(name="optax:lamb2"), 10)


def run_steps(tx, params, grads_fn, steps):
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads_fn(params), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


QUADRATIC_TARGET = {"layer": {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]]),
                              "bias": jnp.array([0.5, -1.0])}}


def quadratic_grads(params):  # of 0.5 * |params - target|^2
  return jax.tree.map(jnp.subtract, params, QUADRATIC_TARGET)


def test_an_optax_optimizer_by_name_gets_the_schedule_and_its_args():
  params = jax.tree.map(jnp.zeros_like, QUADRATIC_TARGET)
  cfg = config(name="optax:lion", args={"b1": 0.8, "b2": 0.95}, learning_rate=0.05, warmup_steps=2,
               grad_clip_norm=0.0)
  tx, schedule = make_optimizer(cfg, 10)
  ours, _ = run_steps(tx, params, quadratic_grads, 5)
  reference, _ = run_steps(optax.lion(schedule, b1=0.8, b2=0.95), params, quadratic_grads, 5)
  jax.tree.map(np.testing.assert_allclose, ours, reference)


def test_an_optax_gradient_transformation_by_name_is_followed_by_weight_decay_and_the_schedule():
  params = jax.tree.map(jnp.ones_like, QUADRATIC_TARGET)
  cfg = config(name="optax:scale_by_lion", args={"b1": 0.8}, learning_rate=0.05, weight_decay=0.1,
               grad_clip_norm=0.0)
  tx, schedule = make_optimizer(cfg, 10)
  ours, _ = run_steps(tx, params, quadratic_grads, 5)
  # The same as lion with its own (decoupled) weight decay on the kernel only (the decay mask).
  reference = optax.lion(schedule, b1=0.8, weight_decay=0.1, mask=decay_mask)
  expected, _ = run_steps(reference, params, quadratic_grads, 5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, expected)


def test_an_optax_optimizer_gets_decoupled_weight_decay_scaled_by_the_schedule():
  params = {"d": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates = one_update(config(name="optax:sgd", learning_rate=0.1, weight_decay=0.5), params, zeros)
  np.testing.assert_allclose(updates["d"]["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(updates["d"]["bias"], 0.0)


def test_optax_args_errors_name_the_key():
  with pytest.raises(ValueError, match="optim.args .* do not fit optax.lion"):
    make_optimizer(config(name="optax:lion", args={"beta": 0.9}), 10)
  with pytest.raises(ValueError, match="optim.args.learning_rate"):
    make_optimizer(config(name="optax:lion", args={"learning_rate": 0.1}), 10)
  with pytest.raises(ValueError, match="only read by 'optax:<name>'"):
    make_optimizer(config(name="adamw", args={"b1": 0.5}), 10)


def test_a_registered_optimizer_is_one_function_and_one_line():
  @register_optimizer("test_sign_sgd")
  def sign_sgd(cfg, weight_decay, schedule):  # pylint: disable=unused-argument
    return optax.chain(optax.scale_by_sign(), weight_decay, optax.scale_by_learning_rate(schedule))
  try:
    params = {"w": {"kernel": jnp.ones((2, 2))}}
    grads = {"w": {"kernel": jnp.array([[3.0, -0.1], [0.0, -7.0]])}}
    updates = one_update(config(name="test_sign_sgd", learning_rate=0.1), params, grads)
    np.testing.assert_allclose(updates["w"]["kernel"], [[-0.1, 0.1], [0.0, 0.1]])
    with pytest.raises(ValueError, match="registered twice"):
      register_optimizer("test_sign_sgd")(sign_sgd)
  finally:
    optim.OPTIMIZERS.remove("test_sign_sgd")


# Per-parameter rules.

TWO_LAYERS = {"head": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
              "body": {"Dense_0": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}}}


def test_lr_multipliers_scale_updates_exactly_and_the_first_matching_rule_wins():
  grads = jax.tree.map(jnp.ones_like, TWO_LAYERS)
  cfg = config(name="sgd", learning_rate=0.1, grad_clip_norm=0.0,
               lr_mults=("head/kernel=10", "head/.*=0", ".*/bias=0.5"))
  updates = one_update(cfg, TWO_LAYERS, grads)
  np.testing.assert_allclose(updates["head"]["kernel"], -1.0, rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["bias"], 0.0)
  np.testing.assert_allclose(updates["body"]["Dense_0"]["bias"], -0.05, rtol=1e-6)
  np.testing.assert_allclose(updates["body"]["Dense_0"]["kernel"], -0.1, rtol=1e-6)


def test_wd_multipliers_scale_the_decay_of_decayed_kernels_only():
  zeros = jax.tree.map(jnp.zeros_like, TWO_LAYERS)
  cfg = config(name="adamw", learning_rate=0.1, weight_decay=0.5, wd_mults=("head/.*=0", ".*=3"))
  updates = one_update(cfg, TWO_LAYERS, zeros)
  np.testing.assert_allclose(updates["head"]["kernel"], 0.0)
  np.testing.assert_allclose(updates["body"]["Dense_0"]["kernel"], -0.1 * 0.5 * 3, rtol=1e-6)
  np.testing.assert_allclose(updates["body"]["Dense_0"]["bias"], 0.0)  # biases are never decayed


def test_frozen_parameters_do_not_move_and_have_no_optimizer_moments():
  cfg = config(name="adamw", learning_rate=0.1, weight_decay=0.1, freeze="body/.*")
  tx, _ = make_optimizer(cfg, 10)
  grads_fn = lambda p: jax.tree.map(jnp.ones_like, p)  # noqa: E731
  params, state = run_steps(tx, TWO_LAYERS, grads_fn, 3)
  jax.tree.map(np.testing.assert_array_equal, params["body"], TWO_LAYERS["body"])
  assert not np.allclose(params["head"]["kernel"], TWO_LAYERS["head"]["kernel"])
  moments = sum(leaf.size for leaf in jax.tree.leaves(state) if leaf.ndim)
  assert moments == 2 * (4 * 3 + 3)  # mu and nu of the head only
  # Clipping sees only the trained parameters: the frozen gradients do not shrink the head's step.
  clipped, _ = make_optimizer(config(name="sgd", learning_rate=1.0, grad_clip_norm=100.0,
                                     freeze="body/.*"), 10)
  updates, _ = clipped.update(jax.tree.map(lambda x: 1e3 * jnp.ones_like(x), TWO_LAYERS),
                              clipped.init(TWO_LAYERS), TWO_LAYERS)
  head_norm = optax.global_norm(updates["head"])
  np.testing.assert_allclose(head_norm, 100.0, rtol=1e-5)


def test_a_linear_probe_trains_only_the_head_of_a_vit():
  params = vit_micro_params()
  tx, _ = make_optimizer(config(freeze="(?!head/).*"), 10)
  state = tx.init(params)
  moments = sum(leaf.size for leaf in jax.tree.leaves(state) if leaf.ndim)  # not the step counts
  assert moments == 2 * (32 * 3 + 3)  # mu and nu of the head


def layer_multipliers_by_name(params, decay):
  named = jax.tree_util.tree_map_with_path(
      lambda path, m: ("/".join(str(k.key) for k in path), m), layer_decay_multipliers(params, decay))
  return dict(jax.tree.leaves(named, is_leaf=lambda x: isinstance(x, tuple)))


def test_layer_decay_on_a_vit_is_decay_to_the_num_layers_plus_one_minus_layer_id():
  d, num_layers = 0.75, 2  # ViT-micro/4 has 2 blocks: embeddings id 0, blocks 1 and 2, head id 3
  multipliers = layer_multipliers_by_name(vit_micro_params(), d)
  expected_ids = {"embedding/kernel": 0, "embedding/bias": 0, "cls": 0,
                  "Transformer/posembed_input/pos_embedding": 0,
                  "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel": 1,
                  "Transformer/encoderblock_0/LayerNorm_0/scale": 1,
                  "Transformer/encoderblock_1/MultiHeadDotProductAttention_0/query/kernel": 2,
                  "Transformer/encoder_norm/scale": 3, "head/kernel": 3, "head/bias": 3}
  for name, layer_id in expected_ids.items():
    assert multipliers[name] == pytest.approx(d ** (num_layers + 1 - layer_id)), name
  assert len(multipliers) == 40 and set(multipliers.values()) == {d ** 3, d ** 2, d, 1.0}


def scanned_param_shapes(name):
  """The params of `name` built with scan_layers=True, as shapes (nothing initialised)."""
  model = create_model(name, num_classes=3, scan_layers=True)
  images = jnp.zeros((1, model.image_size, model.image_size, 3))
  return nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), images, train=False))["params"])


def test_layer_decay_of_a_scanned_vit_is_one_multiplier_per_row_of_the_layers_axis():
  d = 0.5
  multipliers = layer_multipliers_by_name(scanned_param_shapes("ViT-micro/4"), d)
  kernel = multipliers["Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"]
  assert kernel.shape == (2, 1, 1)
  np.testing.assert_allclose(kernel.ravel(), [d ** 2, d])
  assert multipliers["cls"] == d ** 3 and multipliers["head/kernel"] == 1.0


def test_layer_decay_of_a_scanned_tnt_counts_the_rows_of_its_block_stack():
  d = 0.5
  multipliers = layer_multipliers_by_name(scanned_param_shapes("TNT-test"), d)
  rows = [m for name, m in multipliers.items() if name.startswith("block/")]
  assert rows and all(np.shape(m)[0] == 2 for m in rows)
  np.testing.assert_allclose(np.ravel(rows[0]), [d ** 2, d])
  assert multipliers["head/kernel"] == 1.0


def test_layer_decay_scales_each_update_and_combines_with_lr_mults():
  params = vit_micro_params()
  grads = jax.tree.map(jnp.ones_like, params)
  cfg = config(name="sgd", learning_rate=1.0, grad_clip_norm=0.0, layer_decay=0.5,
               lr_mults=("head/.*=3",))
  updates = one_update(cfg, params, grads)
  np.testing.assert_allclose(updates["cls"], -0.125)
  np.testing.assert_allclose(updates["Transformer"]["encoderblock_1"]["LayerNorm_0"]["bias"], -0.5)
  np.testing.assert_allclose(updates["head"]["kernel"], -3.0)


def test_layer_decay_needs_transformer_blocks():
  with pytest.raises(ValueError, match="optim.layer_decay needs transformer blocks"):
    make_optimizer(config(layer_decay=0.7), 10)[0].init(TWO_LAYERS)


def test_bad_rules_are_errors_that_name_the_key():
  with pytest.raises(ValueError, match="optim.lr_mults: bad regex 'head/\\('"):
    make_optimizer(config(lr_mults=("head/(=2",)), 10)
  with pytest.raises(ValueError, match="optim.wd_mults entry 'head' must be 'regex=multiplier'"):
    make_optimizer(config(wd_mults=("head",)), 10)
  with pytest.raises(ValueError, match="optim.freeze: bad regex"):
    make_optimizer(config(freeze="[body"), 10)
  tx, _ = make_optimizer(config(lr_mults=("heads/.*=2",)), 10)
  with pytest.raises(ValueError, match="optim.lr_mults regex 'heads/.*' matches no parameter"):
    tx.init(TWO_LAYERS)


# The EMA of the weights.

def test_ema_of_the_weights_equals_the_hand_computed_average():
  decay, lr, steps = 0.9, 0.1, 6
  params = jax.tree.map(jnp.zeros_like, QUADRATIC_TARGET)
  tx, _ = make_optimizer(config(name="sgd", momentum=0.0, learning_rate=lr, decay="constant",
                                grad_clip_norm=0.0, ema_decay=decay), 10)
  final, state = run_steps(tx, params, quadratic_grads, steps)
  for name in ("kernel", "bias"):
    target = np.asarray(QUADRATIC_TARGET["layer"][name], np.float64)
    p = np.zeros_like(target)
    ema = p.copy()
    for _ in range(steps):
      p = p - lr * (p - target)
      ema = decay * ema + (1 - decay) * p
    np.testing.assert_allclose(final["layer"][name], p, rtol=1e-6)
    np.testing.assert_allclose(ema_params(state)["layer"][name], ema, rtol=1e-6)
    assert ema_params(state)["layer"][name].dtype == jnp.float32
  assert ema_params(tx.init(params)) is not None
  assert ema_params(make_optimizer(config(), 10)[0].init(params)) is None


# Sharding: the state is laid out like the params.

def test_the_state_is_sharded_like_the_params_through_map_params():
  """What the trainer does: shardings of the params mapped over the state (frozen leaves, layer decay,
  EMA and all), then a jitted init and update that keep them."""
  block = {"Dense_0": {"kernel": jnp.ones((16, 8)), "bias": jnp.ones(8)}}
  params = {"Transformer": {f"encoderblock_{i}": block for i in range(2)},
            "embedding": {"kernel": jnp.ones((8, 8))}, "head": {"kernel": jnp.ones((8, 4))}}
  mesh = parallel.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  param_shardings = jax.tree.map(
      lambda x: NamedSharding(mesh, PartitionSpec("fsdp") if x.ndim == 2 else PartitionSpec()), params)
  replicated = NamedSharding(mesh, PartitionSpec())
  everything = config(freeze="embedding/.*", layer_decay=0.8, ema_decay=0.99, weight_decay=0.1)
  for cfg in (config(), everything):
    tx, _ = make_optimizer(cfg, 10)
    abstract = jax.eval_shape(tx.init, params)
    shardings = map_params(tx, lambda _, sharding: sharding, abstract, param_shardings,
                           transform_non_params=lambda _: replicated)
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    kernels = [leaf for leaf in jax.tree.leaves(state) if leaf.shape == (16, 8)]
    assert kernels and all(k.sharding.spec == PartitionSpec("fsdp") for k in kernels)
    update = jax.jit(tx.update, out_shardings=(param_shardings, shardings))
    update(jax.tree.map(jnp.ones_like, params), state, params)
  # Without frozen parameters the plain optax.tree_map_params gives the same layout.
  tx, _ = make_optimizer(config(ema_decay=0.5, layer_decay=0.8), 10)
  abstract = jax.eval_shape(tx.init, params)
  layout = lambda tree_map_params: tree_map_params(  # noqa: E731
      tx, lambda _, sharding: sharding, abstract, param_shardings,
      transform_non_params=lambda _: replicated)
  assert layout(optax.tree_map_params) == layout(map_params)
