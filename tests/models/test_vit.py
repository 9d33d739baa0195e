"""Specification of the ViT family: parameter counts, shapes, names, heads and input checks."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model


def abstract_params(model, image_size=None):
  size = image_size or model.image_size
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  return nn.unbox(variables["params"])


def count(params):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


# Published counts (docs/checkpoint_format.md#model-family): 224 px, 1000 classes.
PUBLISHED = {
    "ViT-Ti/16": 5_717_416, "ViT-S/16": 22_050_664, "ViT-S/32": 22_878_952,
    "ViT-B/8": 86_576_872, "ViT-B/16": 86_567_656, "ViT-B/32": 88_224_232,
    "ViT-L/16": 304_326_632, "ViT-L/32": 306_535_400, "ViT-H/14": 632_045_800,
    "ViT-testing": 21_390,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published_table(name):
  assert count(abstract_params(create_model(name))) == PUBLISHED[name]


def test_b16_variants_match_published_counts():
  assert count(abstract_params(create_model("ViT-B/16", image_size=384))) == 86_859_496
  assert count(abstract_params(create_model("ViT-B/16", num_classes=21843))) == 102_595_923
  with_rep = create_model("ViT-B/16", num_classes=21843, representation_size=768)
  assert count(abstract_params(with_rep)) == 103_186_515
  gap = create_model("ViT-B/16", classifier="gap")
  assert count(abstract_params(gap)) == 86_566_120


def test_b16_tree_uses_public_linen_names_and_shapes():
  params = abstract_params(create_model("ViT-B/16"))
  flat = {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  assert len(flat) == 200
  block = "Transformer/encoderblock_11/"
  assert flat["embedding/kernel"] == (16, 16, 3, 768)
  assert flat["cls"] == (1, 1, 768)
  assert flat["Transformer/posembed_input/pos_embedding"] == (1, 197, 768)
  assert flat[block + "MultiHeadDotProductAttention_0/query/kernel"] == (768, 12, 64)
  assert flat[block + "MultiHeadDotProductAttention_0/key/bias"] == (12, 64)
  assert flat[block + "MultiHeadDotProductAttention_0/out/kernel"] == (12, 64, 768)
  assert flat[block + "MlpBlock_0/Dense_0/kernel"] == (768, 3072)
  assert flat[block + "LayerNorm_1/scale"] == (768,)
  assert flat["Transformer/encoder_norm/bias"] == (768,)
  assert flat["head/kernel"] == (768, 1000)


def test_every_parameter_carries_logical_axis_names():
  model = create_model("ViT-micro/4", num_classes=10)
  boxed = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  for leaf in leaves:
    assert len(leaf.names) == len(leaf.value.shape)


def init_micro(**overrides):
  model = create_model("ViT-micro/4", num_classes=5, **overrides)
  images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  params = nn.unbox(model.init(jax.random.key(0), images, train=False)["params"])
  return model, params, images


def test_logits_shape_and_zero_initialised_head():
  model, params, images = init_micro()
  logits = model.apply({"params": params}, images, train=False)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, 0.0)  # head kernel and bias start at zero


def test_head_bias_init_sets_initial_logits():
  model, params, images = init_micro(head_bias_init=-10.0)
  np.testing.assert_allclose(model.apply({"params": params}, images), -10.0)


def test_gap_classifier_has_no_class_token_and_pools_all_tokens():
  model, params, images = init_micro(classifier="gap")
  assert "cls" not in params
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 16, 32)
  features = create_model("ViT-micro/4", num_classes=0, classifier="gap").apply(
      {"params": {k: v for k, v in params.items() if k != "head"}}, images)
  assert features.shape == (3, 32)


def test_representation_layer_is_dense_tanh_before_head():
  model, params, images = init_micro(representation_size=7)
  assert params["pre_logits"]["kernel"].shape == (32, 7)
  features = create_model("ViT-micro/4", num_classes=0, representation_size=7).apply(
      {"params": {k: v for k, v in params.items() if k != "head"}}, images)
  assert features.shape == (3, 7) and float(jnp.max(jnp.abs(features))) < 1.0


def test_dropout_and_stochastic_depth_only_act_in_training():
  model, params, images = init_micro(dropout_rate=0.5, stochastic_depth=0.5)
  params["head"]["kernel"] = jnp.ones_like(params["head"]["kernel"])
  eval_a = model.apply({"params": params}, images, train=False)
  eval_b = model.apply({"params": params}, images, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(1)})
  train_b = model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(train_a, train_b)


def test_exact_and_tanh_gelu_differ_only_slightly():
  model_tanh, params, images = init_micro()
  params["head"]["kernel"] = jnp.ones_like(params["head"]["kernel"])
  model_erf = create_model("ViT-micro/4", num_classes=5, gelu_approximate=False)
  a = model_tanh.apply({"params": params}, images)
  b = model_erf.apply({"params": params}, images)
  assert 0 < float(jnp.max(jnp.abs(a - b))) < 1e-2


def test_bfloat16_compute_keeps_float32_params():
  model, params, images = init_micro(dtype="bfloat16")
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  assert model.apply({"params": params}, images).dtype == jnp.float32


def test_wrong_resolution_is_a_clear_error():
  model, params, _ = init_micro()
  with pytest.raises(ValueError, match="built for 16x16 images but got 32x32"):
    model.apply({"params": params}, jnp.zeros((1, 32, 32, 3)))


def test_unknown_classifier_is_rejected():
  with pytest.raises(ValueError, match="classifier must be"):
    init_micro(classifier="cls")


def test_fused_attention_computes_the_same_function():
  model, params, images = init_micro(attention_impl="xla")
  params["head"]["kernel"] = jax.random.normal(jax.random.key(3), params["head"]["kernel"].shape)
  fused = create_model("ViT-micro/4", num_classes=5, attention_impl="fused")
  np.testing.assert_allclose(fused.apply({"params": params}, images),
                             model.apply({"params": params}, images), atol=1e-5)


def test_a_token_head_gives_per_token_logits_and_leaves_the_logits_the_class_tokens():
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  plain = create_model("ViT-micro/4", num_classes=5)
  with_head = create_model("ViT-micro/4", num_classes=5, token_head=True)
  assert with_head.interface.dense_outputs and not plain.interface.dense_outputs
  params = with_head.init(jax.random.key(1), images)["params"]
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(2), p.shape), nn.unbox(params))
  assert set(params) - set(nn.unbox(plain.init(jax.random.key(1), images)["params"])) == {"aux_head"}
  plain_params = {k: v for k, v in params.items() if k != "aux_head"}
  logits = with_head.apply({"params": params}, images)
  np.testing.assert_allclose(logits, plain.apply({"params": plain_params}, images), atol=1e-6)
  dense = with_head.clone(return_dense=True).apply({"params": params}, images)
  np.testing.assert_allclose(dense.cls_logits, logits, atol=1e-6)
  assert dense.token_logits.shape == (2, 16, 5) and not np.any(dense.mix_box)


@pytest.mark.parametrize("fields, problem", [
    (dict(token_head=True, classifier="gap"), "token_head=True needs classifier='token'"),
    (dict(return_dense=True), "return_dense=True needs token_head=True or masked_patch_prediction"),
    (dict(token_head=True, masked_patch_prediction=True), "both define what return_dense=True")])
def test_dense_outputs_without_a_class_token_or_a_token_head_are_refused(fields, problem):
  model = create_model("ViT-micro/4", num_classes=5, **fields)
  with pytest.raises(ValueError, match=problem):
    model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_masked_patch_prediction_adds_a_mask_embedding_and_a_colour_head_and_nothing_else():
  plain, plain_params, images = init_micro()
  model, params, _ = init_micro(masked_patch_prediction=True)
  assert model.interface.masked_patch_prediction and not plain.interface.masked_patch_prediction
  assert set(params) - set(plain_params) == {"mask_embedding", "mpp_head"}
  assert params["mask_embedding"].shape == (32,) and params["mpp_head"]["kernel"].shape == (32, 512)
  without = {k: v for k, v in params.items() if k not in ("mask_embedding", "mpp_head")}
  params["head"]["kernel"] = jax.random.normal(jax.random.key(3), (32, 5))
  np.testing.assert_array_equal(model.apply({"params": params}, images),  # nothing corrupted
                                plain.apply({"params": without}, images))
  scanned = create_model("ViT-micro/4", num_classes=5, masked_patch_prediction=True,
                         scan_layers=True, classifier="gap", return_dense=True)
  output = jax.eval_shape(lambda: scanned.init_with_output(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, images, train=True)[0])
  assert output.patch_logits.shape == (3, 16, 512) and output.corrupted.shape == (3, 16)


def test_masked_patch_prediction_corrupts_the_patch_embeddings_before_the_class_token_and_positions():
  """The encoder's input is [cls] + the corrupted patch embeddings (it adds the position table
  itself); the output carries a colour prediction per patch token and which patches were corrupted."""
  model, params, images = init_micro(masked_patch_prediction=True)
  seen = {}

  def record_encoder_input(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.name == "Transformer":
      seen["input"] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record_encoder_input):
    output, state = model.clone(return_dense=True).apply(
        {"params": params}, images, train=True, rngs={"dropout": jax.random.key(5)},
        mutable=["intermediates"])
  patches = np.asarray(state["intermediates"]["stem_output"][0])
  encoder_in, corrupted = np.asarray(seen["input"]), np.asarray(output.corrupted)
  np.testing.assert_array_equal(encoder_in[:, 0], np.broadcast_to(params["cls"][0], (3, 32)))
  assert output.patch_logits.shape == (3, 16, 512) and output.cls_logits.shape == (3, 5)
  assert corrupted.shape == (3, 16) and np.all(corrupted.sum(axis=1) == 8)
  np.testing.assert_array_equal(encoder_in[:, 1:][~corrupted], patches[~corrupted])
  for b, n in zip(*np.nonzero(corrupted)):  # [mask], another patch of the image, or itself
    row = encoder_in[b, 1 + n]
    assert (np.array_equal(row, params["mask_embedding"])
            or any(np.array_equal(row, patch) for patch in patches[b]))
  assert np.any(np.all(encoder_in[:, 1:] == params["mask_embedding"], axis=-1))
