"""Specification of the one block stack (models/stack.py): every transformer family runs its layers
through it with one BlockOptions object, so scan_layers, remat_policy, attention_impl and the bf16
dense path behave alike in ViT, the hybrid, TNT, T2T-ViT and LV-ViT."""
import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model
from vit_jax.models.layers import BlockOptions

from .tiny import TRANSFORMERS, images_for, random_variables

MODELS_DIR = pathlib.Path(__file__).resolve().parents[2] / "vit_jax" / "models"
# The unrolled blocks of each family: `{name}_{i}` under `parent`; scanned, one `{name}`.
BLOCKS = {"ViT-micro/4": ("Transformer", "encoderblock"), "TNT-test": (None, "block"),
          "T2T-ViT-test": ("Transformer", "encoderblock"), "LV-ViT-test": ("Transformer", "encoderblock")}


def scanned_layout(params: dict, parent, name: str) -> dict:
  """{name}_0 ... {name}_{n-1} -> one {name} whose leaves are stacked along a new leading axis."""
  if parent is not None:
    return {**params, parent: scanned_layout(params[parent], None, name)}
  count = sum(key.startswith(f"{name}_") for key in params)
  blocks = [params[f"{name}_{i}"] for i in range(count)]
  rest = {k: v for k, v in params.items() if not k.startswith(f"{name}_")}
  return {**rest, name: jax.tree.map(lambda *layers: np.stack(layers), *blocks)}


def shapes(tree):
  return jax.tree.map(lambda leaf: tuple(leaf.shape), tree)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_scanned_layers_with_remat_compute_the_unrolled_function_and_gradients(name):
  unrolled = create_model(name, num_classes=5)
  scanned = create_model(name, num_classes=5, scan_layers=True)
  scanned_remat = create_model(name, num_classes=5, scan_layers=True, remat_policy="full")
  variables = random_variables(unrolled)
  scanned_variables = {**variables, "params": scanned_layout(variables["params"], *BLOCKS[name])}
  # The scanned tree is the unrolled one with the blocks stacked (the layout vit_jax.checkpoint maps).
  assert shapes(random_variables(scanned)) == shapes(scanned_variables)
  images = images_for(unrolled)

  def value_and_grad(model, variables):
    def loss(params):
      return jnp.sum(model.apply({**variables, "params": params}, images) ** 2)
    return jax.value_and_grad(loss)(variables["params"])

  @jax.jit
  def run(variables, scanned_variables):
    return (value_and_grad(unrolled, variables), scanned.apply(scanned_variables, images),
            unrolled.apply(variables, images), value_and_grad(scanned_remat, scanned_variables))

  (loss, grads), scanned_logits, logits, (remat_loss, remat_grads) = run(variables, scanned_variables)
  np.testing.assert_allclose(scanned_logits, logits, atol=1e-5)
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-5)
  want = scanned_layout(grads, *BLOCKS[name])
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4), remat_grads, want)


def test_scanned_tnt_draws_drop_paths_in_training_only():
  """The per-layer rate of a scanned TntBlock is traced (layer index); evaluation needs no rng."""
  model = create_model("TNT-test", num_classes=5, scan_layers=True, stochastic_depth=0.5)
  variables = random_variables(model)
  images = images_for(model)
  evaluated = jax.jit(model.apply)(variables, images)
  without = jax.jit(create_model("TNT-test", num_classes=5, scan_layers=True).apply)(variables, images)
  np.testing.assert_allclose(evaluated, without, atol=1e-6)
  train = jax.jit(lambda rng: model.apply(variables, images, train=True, rngs={"dropout": rng}))
  assert not np.allclose(train(jax.random.key(1)), train(jax.random.key(2)))


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_fused_attention_computes_the_same_function(name):
  model = create_model(name, num_classes=5, attention_impl="xla")
  fused = create_model(name, num_classes=5, attention_impl="fused")
  variables, images = random_variables(model), images_for(model)
  got, want = jax.jit(lambda v: (fused.apply(v, images), model.apply(v, images)))(variables)
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_block_options_reach_the_blocks_of_every_family(name):
  model = create_model(name, attention_impl="flash")
  size = model.image_size
  with pytest.raises(ValueError, match="attention_impl must be one of .*'flash'"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  model = create_model(name, remat_policy="everything")
  with pytest.raises(ValueError, match="unknown remat_policy 'everything'"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def test_block_options_are_one_hashable_value():
  tnt = create_model("TNT-S/16")
  inner, outer = tnt.block_options("inner"), tnt.block_options("outer")
  assert (inner.mlp_dim, inner.num_heads, outer.mlp_dim, outer.num_heads) == (96, 4, 1536, 6)
  assert not inner.qkv_bias and inner.layer_norm_epsilon == 1e-5
  assert hash(inner) != hash(outer) and inner == tnt.block_options("inner")
  lvvit = create_model("LV-ViT-S").block_options()
  assert lvvit.residual_scale == 0.5 and not lvvit.qkv_bias and not lvvit.gelu_approximate
  t2t = create_model("T2T-ViT-14", attention_scale="embed_dim").block_options()
  assert t2t.attention_scale == 384 ** -0.5
  with pytest.raises(ValueError, match="attention_impl"):
    BlockOptions(mlp_dim=4, num_heads=1, attention_impl="flash")


def test_every_dense_layer_of_the_families_is_the_bf16_path():
  """layers.Dense computes through precision.dense / add_bias (float32 accumulation and bias sums);
  a flax nn.Dense anywhere in a family would miss them."""
  for path in sorted(MODELS_DIR.glob("*.py")):
    tree = ast.parse(path.read_text())
    uses = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr in ("Dense", "DenseGeneral") and getattr(node.value, "id", None) == "nn"]
    assert not uses, f"{path.name} uses flax nn.Dense on lines {uses}; use layers.Dense"
