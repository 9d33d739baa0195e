"""Specification of a teacher's dense class scores: the head applied at every location, consistent
with each family's own outputs, and stored as top-k maps."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model
from vit_jax.models.dense_scores import dense_logits, top_k_maps


def random_variables(model, images, seed=0):
  """Variables of the model's shapes, all drawn at random (heads start at zero in some families;
  statistics such as BatchNorm's are drawn positive), without running its initialisers."""
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(seed), images))
  leaves, tree = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  drawn = [0.3 * jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves)]
  variables = jax.tree.unflatten(tree, drawn)
  return {name: collection if name == "params" else jax.tree.map(lambda x: jnp.abs(x) + 0.5, collection)
          for name, collection in variables.items()}


@pytest.mark.parametrize("name, fields, grid", [
    ("BiT-testing", {}, (4, 4)),            # 32 px and two stages: a stride-8 feature map
    ("ViT-micro/4", {"classifier": "gap"}, (4, 4))])
def test_the_mean_of_a_pooled_models_map_is_its_logits(name, fields, grid):
  model = create_model(name, num_classes=7, **fields)
  images = jax.random.normal(jax.random.key(2), (2, model.image_size, model.image_size, 3))
  variables = random_variables(model, images)
  # Compiled: a ResNet's first eager dispatch of every op costs more than compiling it whole.
  scores, logits = jax.jit(lambda v, x: (dense_logits(model, v, x), model.apply(v, x)))(
      variables, images)
  assert scores.shape == (2, *grid, 7)
  np.testing.assert_allclose(jnp.mean(scores, axis=(1, 2)), logits, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["ViT-micro/4", "LV-ViT-test"])
def test_a_class_token_models_map_is_its_per_token_head_on_the_patch_tokens(name):
  """ViT reads its class head at each patch token, as a token_head model with that head as its
  aux_head predicts; LV-ViT reads its own aux_head, as its DenseOutput does."""
  fields = {"token_head": True} if name.startswith("ViT") else {}
  model = create_model(name, num_classes=7, **fields)
  images = jax.random.normal(jax.random.key(2), (2, model.image_size, model.image_size, 3))
  variables = random_variables(model, images)
  if name.startswith("ViT"):
    variables["params"]["aux_head"] = variables["params"]["head"]
    plain = create_model(name, num_classes=7)
    teacher, teacher_variables = plain, {
        **variables, "params": {k: v for k, v in variables["params"].items() if k != "aux_head"}}
  else:
    teacher, teacher_variables = model, variables
  scores, dense = jax.jit(lambda tv, v, x: (
      dense_logits(teacher, tv, x), model.clone(return_dense=True).apply(v, x)))(
          teacher_variables, variables, images)
  side = scores.shape[1]
  np.testing.assert_allclose(scores.reshape(2, side * side, 7), dense.token_logits, atol=2e-5)


def test_top_k_maps_keep_the_largest_scores_per_location_in_the_stored_layout():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 3, 10))
  values, indices = top_k_maps(logits, 4)
  assert values.shape == indices.shape == (2, 4, 3, 3)
  np.testing.assert_array_equal(indices[:, 0], jnp.argmax(logits, axis=-1))
  assert np.all(np.diff(np.asarray(values), axis=1) <= 0)
  np.testing.assert_allclose(np.take_along_axis(np.moveaxis(np.asarray(logits), 3, 1),
                                                np.asarray(indices), axis=1), values)
  resized, _ = top_k_maps(logits, 4, grid=(6, 6))
  assert resized.shape == (2, 4, 6, 6)
