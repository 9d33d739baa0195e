"""Specification of the mixed-precision matmuls: exact in float32, float32-accumulated in bf16, and a
backward pass whose products all stay bf16 x bf16 (the fast kernels) on every backend."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import precision
from vit_jax.models.layers import Dense
from vit_jax.models.precision import add_bias, dense, patch_embedding_conv


def _operands(x_shape, k_shape, seed=0):
  rng = np.random.RandomState(seed)
  return (jnp.asarray(rng.randn(*x_shape), jnp.float32),
          jnp.asarray(rng.randn(*k_shape) / np.sqrt(np.prod(k_shape[:len(x_shape) - 1])), jnp.float32))


def _reference(x, kernel, contract):
  axes = (tuple(range(x.ndim - contract, x.ndim)), tuple(range(contract)))
  return jnp.tensordot(x, kernel, axes, precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("x_shape,k_shape,contract", [
    ((2, 5, 8), (8, 12), 1), ((2, 5, 4, 3), (4, 3, 8), 2), ((2, 3, 4, 2, 2, 3), (2, 2, 3, 6), 3)])
def test_float32_dense_is_the_tensor_contraction(x_shape, k_shape, contract):
  x, kernel = _operands(x_shape, k_shape)
  np.testing.assert_allclose(dense(x, kernel, jnp.float32, contract), _reference(x, kernel, contract),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,k_shape,contract", [((4, 8, 16), (16, 24), 1),
                                                      ((4, 8, 4, 4), (4, 4, 16), 2)])
def test_bfloat16_dense_and_its_gradients_match_float32_to_bf16_rounding(x_shape, k_shape, contract):
  x, kernel = _operands(x_shape, k_shape)
  cotangent = jnp.asarray(np.random.RandomState(1).randn(*_reference(x, kernel, contract).shape))

  def pullback(dtype):
    y, vjp = jax.vjp(lambda a, b: dense(a, b, dtype, contract).astype(jnp.float32), x, kernel)
    return (y,) + vjp(cotangent)

  got, want = jax.jit(lambda: pullback(jnp.bfloat16))(), jax.jit(lambda: pullback(jnp.float32))()
  assert got[0].dtype == jnp.float32 and got[1].dtype == x.dtype and got[2].dtype == kernel.dtype
  for g, w in zip(got, want):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g / scale, w / scale, atol=3e-2)  # a few bf16 ulps of the largest


def _dot_operand_types(compiled_text: str) -> list[tuple[str, str]]:
  """(lhs, rhs) element types of every dot in a compiled HLO module."""
  types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", compiled_text))
  dots = re.findall(r"= \w+\[[^\]]*\]\{[^}]*\} dot\(%([\w.\-]+), %([\w.\-]+)\)", compiled_text)
  return [(types[a], types[b]) for a, b in dots]


def test_on_cpu_every_bf16_gradient_product_has_bf16_operands():
  assert jax.default_backend() == "cpu"  # conftest.py pins the tests to CPU, where this pass applies
  x, kernel = _operands((8, 32, 64), (64, 128))
  grad = jax.jit(jax.grad(lambda a, b: jnp.sum(dense(a, b, jnp.bfloat16).astype(jnp.float32) ** 2),
                          argnums=(0, 1)))
  operand_types = _dot_operand_types(grad.lower(x, kernel).compile().as_text())
  assert len(operand_types) == 3  # forward, input gradient, kernel gradient
  assert all(pair == ("bf16", "bf16") for pair in operand_types), operand_types


def test_on_gpu_and_tpu_the_bf16_gradient_products_are_bf16_and_equal_the_cpu_form(monkeypatch):
  """Off CPU the weight gradient reads x^T in place; the products are still bf16 x bf16 -> f32."""
  x, kernel = _operands((8, 32, 64), (64, 128))

  def grad(a, b):
    return jax.grad(lambda a, b: jnp.sum(dense(a, b, jnp.bfloat16).astype(jnp.float32) ** 2),
                    argnums=(0, 1))(a, b)

  cpu_form = jax.jit(grad)(x, kernel)
  monkeypatch.setattr(precision, "_transposes_in_memory", lambda: False)
  lowered = jax.jit(grad).lower(x, kernel).as_text()  # StableHLO, before any backend's compiler
  dots = re.findall(r"stablehlo\.dot_general .*: \(tensor<[\dx]+(\w+)>, tensor<[\dx]+(\w+)>\)", lowered)
  assert dots == [("bf16", "bf16")] * 3, dots
  for got, want in zip(jax.jit(grad)(x, kernel), cpu_form):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("x_shape,k_shape,contract", [((4, 64, 128), (128, 4, 32), 1),
                                                      ((4, 64, 4, 32), (4, 32, 128), 2)])
def test_on_cpu_float32_head_projection_gradients_copy_nothing(x_shape, k_shape, contract):
  """q/k/v (kernel (D, heads, head_dim)) and out (kernel (heads, head_dim, D)) as one 2-D product:
  XLA:CPU then runs the weight gradient without a transposed copy of the activation or cotangent
  (the N-D form compiled to four copies and transposes per projection)."""
  x, kernel = _operands(x_shape, k_shape)
  grad = jax.jit(jax.grad(lambda a, b: jnp.sum(dense(a, b, jnp.float32, contract) ** 2),
                          argnums=(0, 1)))
  hlo = grad.lower(x, kernel).compile().as_text()
  entry = hlo[hlo.index("ENTRY"):].splitlines()
  moves = [line.strip() for line in entry if re.match(r"\s*(ROOT )?%\w*(copy|transpose)", line)]
  assert moves == []


@pytest.mark.parametrize("bias_shape", [(96,), (4, 24)])
def test_bf16_bias_gradient_is_a_float32_sum_without_reduce_windows(bias_shape):
  """The bias of a bf16 layer (q/k/v biases are (heads, head_dim)) gets its gradient summed in
  float32; autodiff's bf16 sum compiled on CPU to a float32 copy and reduce-windows."""
  rng = np.random.RandomState(0)
  y = jnp.asarray(rng.randn(8, 197, *bias_shape), jnp.bfloat16)  # ViT-B/16's 8 x 197 tokens
  bias = jnp.asarray(rng.randn(*bias_shape), jnp.float32)
  cotangent = jnp.asarray(rng.randn(*y.shape), jnp.bfloat16)
  grad = jax.jit(lambda y, b, g: jax.vjp(add_bias, y, b)[1](g))
  dy, dbias = grad(y, bias, cotangent)
  assert dy.dtype == jnp.bfloat16 and dbias.dtype == jnp.float32
  np.testing.assert_array_equal(dy, cotangent)
  want = np.asarray(cotangent, np.float64).reshape(-1, *bias_shape).sum(axis=0)
  np.testing.assert_allclose(dbias, want, rtol=1e-5, atol=1e-4)
  assert "reduce-window" not in grad.lower(y, bias, cotangent).compile().as_text()


def test_add_bias_adds_in_the_activation_dtype():
  y = jnp.ones((2, 3, 4), jnp.bfloat16)
  out = add_bias(y, jnp.arange(4, dtype=jnp.float32))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out[1, 2], np.arange(4) + 1.0)


def test_dense_names_a_kernel_that_does_not_fit():
  x, kernel = _operands((2, 8), (6, 4))
  with pytest.raises(ValueError, match=r"cannot contract input axes \(8,\)"):
    dense(x, kernel, jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layers_dense_equals_flax_dense_with_the_same_parameters(dtype):
  x = jnp.asarray(np.random.RandomState(0).randn(2, 7, 16), jnp.float32)
  ours = Dense(12, dtype=dtype, bias_init=nn.initializers.normal(1.0))
  flax_dense = nn.Dense(12, dtype=jnp.float32, bias_init=nn.initializers.normal(1.0))
  params = flax_dense.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_array_equal(ours.init(jax.random.key(0), x)["params"]["kernel"],
                                params["params"]["kernel"])  # same initializer, same key
  tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
  np.testing.assert_allclose(ours.apply(params, x).astype(jnp.float32), flax_dense.apply(params, x),
                             rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("strides", [(4, 4), (2, 2)])  # patches, and an overlapping conv (lax's)
def test_patch_embedding_conv_equals_the_convolution(dtype, strides):
  images = jnp.asarray(np.random.RandomState(0).randn(2, 16, 16, 3), jnp.float32)
  ours = nn.Conv(8, (4, 4), strides=strides, padding="VALID", dtype=dtype,
                 conv_general_dilated=patch_embedding_conv(dtype))
  conv = nn.Conv(8, (4, 4), strides=strides, padding="VALID")
  params = conv.init(jax.random.key(0), images)

  def loss(module, p):
    return jnp.sum(module.apply(p, images).astype(jnp.float32) ** 2)

  tolerance = 1e-4 if dtype == jnp.float32 else 3e-2
  want, got = conv.apply(params, images), ours.apply(params, images).astype(jnp.float32)
  np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * float(jnp.max(jnp.abs(want))))
  want_grad = jax.grad(lambda p: loss(conv, p))(params)["params"]["kernel"]
  got_grad = jax.grad(lambda p: loss(ours, p))(params)["params"]["kernel"]
  np.testing.assert_allclose(got_grad, want_grad, atol=tolerance * float(jnp.max(jnp.abs(want_grad))))
