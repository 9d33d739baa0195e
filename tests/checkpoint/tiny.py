"""Tiny ViT params and tree helpers shared by the checkpoint tests.

Params are random numpy arrays in the model's exact tree (from jax.eval_shape), which costs no
compilation; tests that need the real initializers or apply the model say so.
"""
import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax.models.registry import create_model
from vit_jax.train.state import TrainState

# The published (pre-Linen) names of the encoder-block children, written out independently of the code.
PUBLIC_NAMES = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def model_and_abstract_params(name="ViT-micro/4", **overrides):
  """(model, params as ShapeDtypeStructs) without running the initializers."""
  model = create_model(name, **overrides)
  size = model.image_size
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return model, nn.unbox(abstract["params"])


@functools.lru_cache(maxsize=None)
def _random_params(name, seed, overrides):
  model, abstract = model_and_abstract_params(name, **dict(overrides))
  def fill(path, leaf):
    key = jax.tree_util.keystr(path)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return rng.normal(size=leaf.shape).astype(leaf.dtype)
  return model, jax.tree_util.tree_map_with_path(fill, abstract)


def init_params(name="ViT-micro/4", seed=0, **overrides):
  """(model, random numpy params in the model's tree); cached, so callers must not mutate them."""
  return _random_params(name, seed, tuple(sorted(overrides.items())))


def flat_public(params, prefix=""):
  """Flattens params to '/'-keys with encoder-block children renamed to the published names."""
  flat = {}
  for key, value in params.items():
    if isinstance(value, dict):
      if key.startswith("encoderblock_"):
        value = {PUBLIC_NAMES.get(k, k): v for k, v in value.items()}
      flat.update(flat_public(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def assert_trees_equal(got, want):
  """Same structure, shapes, dtypes and bits."""
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.asarray(g).dtype == np.asarray(w).dtype
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def make_state(step=7, seed=0):
  """A TrainState with adamw optimizer state whose moments hold random (non-zero) values."""
  _, params = init_params(seed=seed)
  opt_state = optax.adamw(1e-3).init(params)
  rng = np.random.default_rng(seed)
  opt_state = jax.tree.map(
      lambda x: rng.normal(size=x.shape).astype(x.dtype) if x.ndim else x, opt_state)
  state = TrainState(step=np.int32(step), params=params, opt_state=opt_state,
                     rng=jax.random.key_data(jax.random.key(seed)))
  return jax.device_put(state)
