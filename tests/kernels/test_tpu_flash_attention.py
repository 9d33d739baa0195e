"""Specification of attention_impl='pallas', run on CPU in Pallas's TPU interpret mode: the same function
and gradients as softmax attention for token counts that are not a multiple of the kernel's block, the
scale and dtypes of the other paths, clear errors. (The model layer's use of it:
tests/models/test_attention_dispatch.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from vit_jax.kernels import tpu_flash_attention


def reference(q, k, v, scale):
  """softmax(scale q k^T) v in float32 at full matmul precision, token-major operands."""
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k, precision="highest")
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v, precision="highest")


def operands(shape, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(0), 4)
  return tuple(jax.random.normal(key, shape, jnp.float32).astype(dtype) for key in keys)


def value_and_pullback(attention, q, k, v, cotangent):
  out, pullback = jax.vjp(attention, q, k, v)
  return (out, *pullback(cotangent))


def test_130_tokens_padded_to_two_blocks_give_softmax_attention_and_its_gradients():
  """130 tokens: the second 128-token block holds 2 real keys and 126 masked padded ones."""
  q, k, v, cotangent = operands((1, 130, 2, 64))
  flash = lambda q, k, v: tpu_flash_attention.attention(q, k, v, scale=0.3)  # noqa: E731
  with pltpu.force_tpu_interpret_mode():
    got = jax.jit(lambda *a: value_and_pullback(flash, *a))(q, k, v, cotangent)
  exact = lambda q, k, v: reference(q, k, v, 0.3)  # noqa: E731
  want = jax.jit(lambda *a: value_and_pullback(exact, *a))(q, k, v, cotangent)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    assert g.shape == w.shape and g.dtype == jnp.float32, name
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=name)


def test_bfloat16_operands_give_a_bfloat16_result_of_float32_softmax():
  q, k, v, _ = operands((1, 20, 1, 32), jnp.bfloat16)
  with pltpu.force_tpu_interpret_mode():
    got = jax.jit(tpu_flash_attention.attention)(q, k, v)
  assert got.dtype == jnp.bfloat16
  # Beyond the bfloat16 rounding of the weights before the second matmul and of the result.
  want = jax.jit(reference, static_argnums=3)(q, k, v, 32 ** -0.5)
  np.testing.assert_allclose(got.astype(jnp.float32), want, atol=2e-2, rtol=2e-2)


def test_unsupported_operands_are_named():
  q = jnp.ones((1, 4, 1, 160))
  with pytest.raises(ValueError, match="head_dim up to 128 or a multiple of 128, got 160"):
    tpu_flash_attention.attention(q, q, q)
  with pytest.raises(ValueError, match="one .batch, tokens, heads, head_dim. shape"):
    tpu_flash_attention.attention(q, q[:, :3], q)
