"""Specification of what the shared attention layer exposes: its softmax weights, sown only when a
caller asks for the ATTENTION_WEIGHTS collection, on the XLA path only."""
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import create_model
from vit_jax.models.layers import ATTENTION_WEIGHTS

from .tiny import images_for, random_variables


def test_attention_weights_are_sown_only_when_asked_and_change_nothing():
  """Asked for, every block gives (batch, heads, tokens, tokens) softmax rows and the logits are the
  same bits; not asked for (init, or apply with 'intermediates'), no model variable or state holds
  them; the fused path, which never forms the weights, sows nothing."""
  model = create_model("ViT-micro/4", num_classes=3, attention_impl="xla")  # 'auto' may pick a kernel
  fused_model = model.clone(attention_impl="fused")

  @jax.jit  # one compilation for the four applications
  def apply_all(variables, images):
    return (model.apply(variables, images, mutable=[ATTENTION_WEIGHTS]), model.apply(variables, images),
            model.apply(variables, images, mutable=["intermediates"])[1],
            fused_model.apply(variables, images, mutable=[ATTENTION_WEIGHTS])[1])

  variables = random_variables(model)
  (logits, state), plain, intermediates, fused = apply_all(variables, images_for(model))
  np.testing.assert_array_equal(logits, plain)
  blocks = state[ATTENTION_WEIGHTS]["Transformer"]
  assert sorted(blocks) == ["encoderblock_0", "encoderblock_1"]
  for block in blocks.values():
    (weights,) = block["MultiHeadDotProductAttention_0"]["weights"]
    assert weights.shape == (2, 2, 17, 17) and weights.min() >= 0
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
  initialised = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))
  assert set(initialised) == {"params"}
  assert set(intermediates) == {"intermediates"}
  assert not fused
