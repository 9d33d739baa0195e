"""Matmuls for mixed precision: bf16 operands, float32 accumulation, fast in both passes on every backend.

The forward product is one dot_general with preferred_element_type=float32. Its autodiff transpose is
not: it multiplies the float32 cotangent with a bf16 operand, so JAX converts both to float32 and the
two gradient products run at the float32 rate (what that cost on an H200: experiments/README.md,
section "On a GPU"). `dense` therefore has its own backward pass that casts the cotangent to
bf16, so both gradient products are bf16 x bf16 -> f32 on every backend, as in PyTorch's autocast;
`add_bias` sums a bf16 bias's gradient in float32.
On CPU the weight gradient also takes a materialized x^T: XLA:CPU's bf16 kernels do not take a
product that contracts the leading token axis of both operands.
"""
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

Dtype = Any
_X_TIMES_W = (((1,), (0,)), ((), ()))    # (m, k) x (k, n) -> (m, n)
_G_TIMES_WT = (((1,), (1,)), ((), ()))   # (m, n) x (k, n) -> (m, k)
_NHWC_HWIO = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _dot(a: jax.Array, b: jax.Array, dimension_numbers) -> jax.Array:
  return jax.lax.dot_general(a, b, dimension_numbers, preferred_element_type=jnp.float32)


def _transposes_in_memory() -> bool:
  """GPU and TPU matmuls read a transposed operand in place; XLA:CPU's bf16 kernel needs it copied."""
  return jax.default_backend() == "cpu"


def _materialized_transpose(x: jax.Array) -> jax.Array:
  """x.T as a real copy: XLA folds a plain transpose into the dot's dimension numbers, and that
  dot (contracting the leading axis of both operands) misses the CPU's bf16 kernels."""
  m, k = x.shape
  split = 8 if m % 8 == 0 else 1
  return x.reshape(split, m // split, k).transpose(2, 0, 1).reshape(k, m)


@jax.custom_vjp
def _dense_2d(x: jax.Array, w: jax.Array) -> jax.Array:
  return _dot(x, w, _X_TIMES_W)


def _dense_2d_forward(x, w):
  return _dot(x, w, _X_TIMES_W), (x, w)


def _dense_2d_backward(residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  dx = _dot(g, w, _G_TIMES_WT).astype(x.dtype)
  x_t = _materialized_transpose(x) if _transposes_in_memory() else x.T
  dw = _dot(x_t, g, _X_TIMES_W).astype(w.dtype)
  return dx, dw


_dense_2d.defvjp(_dense_2d_forward, _dense_2d_backward)


def _own_backward(dtype: Dtype) -> bool:
  return jnp.dtype(dtype) != jnp.float32


def dense(x: jax.Array, kernel: jax.Array, dtype: Dtype, contract: int = 1) -> jax.Array:
  """Contracts the last `contract` axes of x with the first ones of kernel, in `dtype` with float32
  accumulation: (..., *k) x (*k, *n) -> (..., *n)."""
  x, kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
  batch_shape, k_shape = x.shape[:x.ndim - contract], x.shape[x.ndim - contract:]
  if kernel.shape[:contract] != k_shape:
    raise ValueError(f"cannot contract input axes {k_shape} with kernel of shape {kernel.shape}")
  n_shape = kernel.shape[contract:]
  # Always one 2-D (m, k) x (k, n) product. XLA:CPU runs the 2-D weight gradient (contracting the
  # token axis of both operands) in its Eigen kernel as it is, while the N-D form of a q/k/v or out
  # projection, kernel (D, heads, head_dim), gets a transposed copy of an activation or cotangent
  # around each gradient product (its cost: experiments/README.md, section "Page faults,
  # transposed copies and bf16 bias gradients").
  k, n = math.prod(k_shape), math.prod(n_shape)
  x2, kernel2 = x.reshape(-1, k), kernel.reshape(k, n)
  y = _dense_2d(x2, kernel2) if _own_backward(dtype) else _dot(x2, kernel2, _X_TIMES_W)
  return y.reshape(batch_shape + n_shape).astype(dtype)


@jax.custom_vjp
def _add_bias_low_precision(y: jax.Array, bias: jax.Array) -> jax.Array:
  return y + bias.astype(y.dtype)


def _add_bias_forward(y, bias):
  return _add_bias_low_precision(y, bias), bias


def _add_bias_backward(bias, g):
  leading = tuple(range(g.ndim - bias.ndim))
  return g, jnp.sum(g.astype(jnp.float32), axis=leading).astype(bias.dtype)


_add_bias_low_precision.defvjp(_add_bias_forward, _add_bias_backward)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias in y's dtype (bias broadcast over y's leading axes). In bf16 the bias gradient is summed
  in float32: autodiff's bf16 sum makes XLA:CPU materialize a float32 copy of the cotangent and
  tree-reduce it with reduce-windows (figures: experiments/README.md, section "Page faults,
  transposed copies and bf16 bias gradients")."""
  if jnp.dtype(y.dtype) == jnp.float32:
    return y + bias.astype(y.dtype)
  return _add_bias_low_precision(y, bias)


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype: Dtype) -> jax.Array:
  """jnp.einsum with float32 accumulation, returning `dtype` (for products that are not `dense`)."""
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(dtype)


def patch_embedding_conv(dtype: Dtype) -> Callable[..., jax.Array]:
  """A conv_general_dilated for nn.Conv that computes a non-overlapping patch convolution (stride equal
  to the kernel, VALID padding, NHWC/HWIO) as patches x kernel through `dense`; any other conv
  is lax's."""
  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
           dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
           preferred_element_type=None):
    kh, kw, c, _ = rhs.shape
    is_patchify = (padding == "VALID" and tuple(window_strides) == (kh, kw) and lhs.ndim == 4
                   and lhs.shape[1] % kh == 0 and lhs.shape[2] % kw == 0
                   and feature_group_count == 1 and batch_group_count == 1
                   and all(d in (None, (1, 1)) for d in (lhs_dilation, rhs_dilation))
                   and dimension_numbers == _NHWC_HWIO)
    if not is_patchify or not _own_backward(dtype):
      return jax.lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, precision,
          preferred_element_type=preferred_element_type)
    b, h, w, _ = lhs.shape
    patches = lhs.reshape(b, h // kh, kh, w // kw, kw, c).transpose(0, 1, 3, 2, 4, 5)
    return dense(patches, rhs, dtype, contract=3)
  return conv
