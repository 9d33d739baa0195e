"""Specification of the scanned <-> unrolled layer layouts and their use in export."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.checkpoint import layers_layout, load_npz
from vit_jax.export import save_npz
from vit_jax.models import create_model

from .tiny import init_params

# Tests of the layout alone use random params in the model's exact tree (tiny.init_params: no
# compilation); those that run the model use its initial params, as training would.


@functools.lru_cache(maxsize=None)
def _init():
  model = create_model("ViT-micro/4", num_classes=5)
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.key(1), images)["params"]  # One compilation, not many.
  return model, nn.unbox(params), images


def init():
  """(ViT-micro/4, its initial params as numpy arrays, images); initialized once."""
  model, params, images = _init()
  return model, jax.tree.map(np.array, params), images


def test_stack_and_unstack_are_inverse():
  _, params = init_params()
  stacked = layers_layout.stack_layers(params)
  assert "encoderblock_0" not in stacked["Transformer"]
  assert stacked["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"].shape == (2, 32, 64)
  jax.tree.map(np.testing.assert_array_equal, layers_layout.unstack_layers(stacked), params)


def test_stacked_params_drive_the_scanned_model_to_the_same_logits():
  model, params, images = init()
  params["head"]["kernel"] = np.random.RandomState(0).randn(32, 5).astype(np.float32)
  scanned = create_model("ViT-micro/4", num_classes=5, scan_layers=True, remat_policy="full")
  np.testing.assert_allclose(
      jax.jit(scanned.apply)({"params": layers_layout.stack_layers(params)}, images),
      jax.jit(model.apply)({"params": params}, images), atol=1e-5)


def test_scanned_init_has_the_unrolled_shapes_after_unstacking():
  _, params = init_params()
  _, scanned = init_params(scan_layers=True)
  assert jax.tree.map(np.shape, layers_layout.unstack_layers(scanned)) == jax.tree.map(np.shape, params)


def test_export_of_scanned_params_is_the_public_unrolled_format(tmp_path):
  _, scanned = init_params(scan_layers=True)
  save_npz(scanned, tmp_path / "scanned.npz")
  keys = set(np.load(tmp_path / "scanned.npz").files)
  assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in keys
  loaded = load_npz(tmp_path / "scanned.npz")
  jax.tree.map(np.testing.assert_array_equal, layers_layout.like(loaded, scanned), scanned)


def test_tnt_scanned_block_stack_unstacks_to_the_unrolled_block_i():
  _, unrolled = init_params("TNT-test")
  _, scanned = init_params("TNT-test", scan_layers=True)
  assert "block" in scanned and "block_0" in unrolled
  assert jax.tree.map(np.shape, layers_layout.unstack_layers(scanned)) == jax.tree.map(np.shape, unrolled)
  assert layers_layout.is_scanned(scanned) and not layers_layout.is_scanned(unrolled)
  jax.tree.map(np.testing.assert_array_equal,
               layers_layout.like(layers_layout.like(scanned, unrolled), scanned), scanned)


def test_unknown_remat_policy_is_rejected():
  with pytest.raises(ValueError, match="unknown remat_policy 'some'"):
    init_params(remat_policy="some")


@functools.lru_cache(maxsize=None)
def _gradients(**overrides):
  """Gradients (in the scanned layout) of a loss of ViT-micro's train and eval logits at the same
  weights, for a model built with `overrides`; computed once per model."""
  _, params, images = init()
  model = create_model("ViT-micro/4", num_classes=5, **overrides)
  loss = lambda p: jnp.sum(model.apply({"params": p}, images, train=True) ** 2
                           + model.apply({"params": p}, images).sum())
  if overrides.get("scan_layers"):
    return jax.jit(jax.grad(loss))(layers_layout.stack_layers(params))
  return layers_layout.stack_layers(jax.jit(jax.grad(loss))(params))


@pytest.mark.parametrize("policy", ["none", "full", "save_dots", "save_named"])
def test_every_remat_policy_gives_the_same_gradients_as_the_unrolled_model(policy):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               _gradients(scan_layers=True, remat_policy=policy), _gradients())


def test_finetuning_loads_unrolled_weights_into_a_scanned_model_and_back(tmp_path):
  from vit_jax.checkpoint import load_pretrained  # pylint: disable=import-outside-toplevel
  _, unrolled = init_params()
  _, scanned = init_params(scan_layers=True)
  loaded, report = load_pretrained(scanned, unrolled, has_class_token=True, keep_pre_logits=False)
  assert layers_layout.is_scanned(loaded) and not report.resized
  np.testing.assert_array_equal(
      loaded["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"][1],
      unrolled["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_0"]["kernel"])
  back, _ = load_pretrained(unrolled, loaded, has_class_token=True, keep_pre_logits=False)
  assert not layers_layout.is_scanned(back)
  jax.tree.map(np.testing.assert_array_equal,
               {k: v for k, v in back.items() if k != "head"},
               {k: v for k, v in unrolled.items() if k != "head"})
