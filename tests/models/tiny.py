"""The tiny variant of every family and random variables for it, shared by the cross-family specs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# One small variant per family (see each variant's comment in its family module).
TINY = ("ViT-micro/4", "R+ViT-testing", "BiT-testing", "TNT-test", "T2T-ViT-test", "LV-ViT-test")
TRANSFORMERS = tuple(name for name in TINY if name != "BiT-testing")


def random_variables(model, seed: int = 0) -> dict:
  """Random variables in the model's tree without compiling its initializers (positive outside
  'params': BatchNorm variances, the Performer's features)."""
  size = model.image_size
  abstract = jax.eval_shape(lambda: nn.unbox(
      model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)))
  rng = np.random.default_rng(seed)

  def draw(collection, leaf):
    value = rng.normal(scale=0.3, size=leaf.shape).astype(leaf.dtype)
    return value if collection == "params" else np.abs(value) + 0.5
  return {col: jax.tree.map(lambda leaf, col=col: draw(col, leaf), tree)
          for col, tree in abstract.items()}


def images_for(model, batch: int = 2, seed: int = 1) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, model.image_size, model.image_size, 3))
