"""Transformer blocks shared by the model families, with logical axis names on every parameter.

Submodule names follow the public vit_jax checkpoints (Linen numbering), so those files load as they are.
"""
import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from vit_jax.models import attention_dispatch
from vit_jax.models.precision import add_bias, dense, einsum

Dtype = Any
Initializer = Callable[..., jax.Array]


def logical(init: Initializer, axes: tuple[Optional[str], ...]) -> Initializer:
  """Tags an initializer with the logical axis names of the parameter it makes."""
  return nn.with_logical_partitioning(init, axes)


def constrain(x: jax.Array, axes: tuple[Optional[str], ...]) -> jax.Array:
  """Names the axes of an activation; the active rules table maps them to mesh axes."""
  return nn.with_logical_constraint(x, axes)


def check_images(images: jax.Array, image_size: int, patch_size: Optional[int] = None,
                 resize_hint: str = "load weights with position embeddings resized, see "
                                    "vit_jax.checkpoint") -> None:
  """Names what is wrong with an input batch: its rank, its resolution, or a patch grid that does not
  tile the image. The families call it before their first layer."""
  if images.ndim != 4:
    raise ValueError(f"expected images of shape (batch, height, width, channels), got {images.shape}")
  if images.shape[1:3] != (image_size, image_size):
    raise ValueError(
        f"the model was built for {image_size}x{image_size} images but got "
        f"{images.shape[1]}x{images.shape[2]}; create it with image_size={images.shape[1]} "
        f"({resize_hint}).")
  if patch_size and image_size % patch_size:
    raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")


def layer_norm(epsilon: float, dtype: Dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, name=name,
      scale_init=logical(nn.initializers.ones, ("embed",)),
      bias_init=logical(nn.initializers.zeros, ("embed",)))


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example (rate 0 is the identity).

  The rate may also be given at call time, as a traced value (layers scanned with nn.scan).
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, rate: Any = None) -> jax.Array:
    rate = self.rate if rate is None else rate
    if deterministic or (isinstance(rate, (int, float)) and rate == 0.0):
      return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Dense(nn.Module):
  """nn.Dense (same parameters, initializers and names) computed through precision.dense and
  precision.add_bias, so a bf16 layer's bias gradient is a float32 sum: the dense layer of every
  family."""
  features: int
  dtype: Dtype = jnp.float32
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    y = dense(x, kernel, self.dtype)
    if not self.use_bias:
      return y
    return add_bias(y, self.param("bias", self.bias_init, (self.features,), jnp.float32))


class PositionEmbedding(nn.Module):
  """Holds the learned (1, tokens, hidden) table under the public name posembed_input/pos_embedding."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    posemb = self.param(
        "pos_embedding",
        logical(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
        (1, x.shape[1], x.shape[2]))
    return x + jnp.asarray(posemb, x.dtype)


def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
  """The fixed (1, positions, dim) table of Vaswani et al.: even features sin, odd cos (T2T-ViT).

  angle[p, j] = p / 10000^(2 * floor(j / 2) / dim); computed in float64 like the official code.
  """
  positions = np.arange(num_positions, dtype=np.float64)[:, None]
  exponents = 2 * (np.arange(dim) // 2) / dim
  angles = positions / np.power(10000.0, exponents)[None, :]
  table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
  return table[None].astype(np.float32)


ATTENTION_IMPLS = attention_dispatch.IMPLS
# The collection the XLA attention path sows its softmax weights into, (B, heads, queries, keys) per
# attention module under the name "weights". Sowing is a no-op unless a caller makes the collection
# mutable (`model.apply(..., mutable=[ATTENTION_WEIGHTS])`, unrolled layers) and never happens in
# init, so no model's variables hold it: the default model computes exactly what it computed before,
# and callers reading 'intermediates' do not carry the weights.
ATTENTION_WEIGHTS = "attention_weights"


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """What one pre-norm transformer block computes, declared once and passed down whole (hashable, so
  it is a valid static module field under jit, nn.scan and nn.remat)."""
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0  # on the attention weights
  gelu_approximate: bool = True        # tanh GELU (the public vit_jax models); False: exact (timm)
  layer_norm_epsilon: float = 1e-6
  dtype: Dtype = jnp.float32           # compute dtype; parameters stay float32
  qkv_bias: bool = True                # False: no q/k/v biases (TNT, T2T-ViT, LV-ViT)
  attention_scale: Optional[float] = None  # None: head_dim**-0.5 (T2T-ViT checkpoints: hidden**-0.5)
  residual_scale: float = 1.0          # multiplies each branch before the residual add (LV-ViT)
  # auto (the backend's fastest: fused on GPU, cpu on CPU hosts, pallas on TPU for long sequences,
  # see models/attention_dispatch.py) | xla (einsum + softmax) | fused (jax.nn.dot_product_attention:
  # cuDNN on GPU) | cpu (the C++ kernel of vit_jax/kernels/cpu_attention.py: every core of an XLA:CPU
  # host) | pallas (JAX's Pallas flash kernel on TPU). All but xla fall back to xla where attention
  # dropout is active.
  attention_impl: str = "auto"

  def __post_init__(self):
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dropout -> Dense -> Dropout (the transformer MLP)."""
  options: BlockOptions

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    o = self.options
    features = x.shape[-1]
    x = Dense(
        o.mlp_dim, dtype=o.dtype, name="Dense_0",
        kernel_init=logical(nn.initializers.xavier_uniform(), ("embed", "mlp")),
        bias_init=logical(nn.initializers.normal(stddev=1e-6), ("mlp",)))(x)
    x = constrain(x, ("batch", "length", "mlp"))
    x = nn.gelu(x, approximate=o.gelu_approximate)
    x = nn.Dropout(o.dropout_rate)(x, deterministic=deterministic)
    x = Dense(
        features, dtype=o.dtype, name="Dense_1",
        kernel_init=logical(nn.initializers.xavier_uniform(), ("mlp", "embed")),
        bias_init=logical(nn.initializers.normal(stddev=1e-6), ("embed",)))(x)
    return nn.Dropout(o.dropout_rate)(x, deterministic=deterministic)


class HeadProjection(nn.Module):
  """x (..., D) -> (..., heads, head_dim) with kernel (D, heads, head_dim): the public q/k/v layout.

  Written out instead of nn.DenseGeneral so the kernel is created in its final rank and its logical
  axis names apply from the start.
  """
  num_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
        "kernel",
        logical(nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2)), ("embed", "heads", "kv")),
        (x.shape[-1], self.num_heads, self.head_dim))
    y = dense(x, kernel, self.dtype)
    if not self.use_bias:
      return y
    bias = self.param("bias", logical(nn.initializers.zeros, ("heads", "kv")),
                      (self.num_heads, self.head_dim))
    return add_bias(y, bias)


class HeadMerge(nn.Module):
  """(..., heads, head_dim) -> (..., D) with kernel (heads, head_dim, D): the public `out` layout."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    kernel = self.param(
        "kernel",
        logical(nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2), ("heads", "kv", "embed")),
        (y.shape[-2], y.shape[-1], self.features))
    bias = self.param("bias", logical(nn.initializers.zeros, ("embed",)), (self.features,))
    return add_bias(dense(y, kernel, self.dtype, contract=2), bias)


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with separate query/key/value/out projections (the public checkpoint layout).

  Reads num_heads, attention_dropout_rate, dtype, qkv_bias, attention_scale and attention_impl from
  the block options.
  """
  options: BlockOptions

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    o = self.options
    features = x.shape[-1]
    if features % o.num_heads:
      raise ValueError(
          f"hidden size {features} is not divisible by num_heads={o.num_heads}; "
          "choose a head count that divides it.")
    head_dim = features // o.num_heads

    def projection(name):
      return HeadProjection(o.num_heads, head_dim, o.dtype, o.qkv_bias, name=name)

    scale = head_dim ** -0.5 if o.attention_scale is None else o.attention_scale
    q = projection("query")(x)
    k = projection("key")(x)
    v = projection("value")(x)
    q = constrain(q, ("batch", "length", "heads", "kv"))
    dropout_active = not deterministic and o.attention_dropout_rate > 0.0
    impl = attention_dispatch.choose(o.attention_impl, jax.default_backend(), x.shape[1], dropout_active)
    # The kernel packages are loaded only when chosen (they compile C++ or know about meshes).
    # pylint: disable=import-outside-toplevel
    if impl == "cpu":
      from vit_jax.kernels import cpu_attention
      y = cpu_attention.attention(q, k, v, scale)  # scales inside its matmuls
    elif impl == "pallas":
      from vit_jax.kernels import tpu_flash_attention
      y = tpu_flash_attention.attention(q, k, v, scale)  # scales the float32 logits
    elif impl == "fused":
      q = q * jnp.asarray(scale, o.dtype)
      y = jax.nn.dot_product_attention(q, k, v, scale=1.0).astype(o.dtype)  # q is pre-scaled
    else:
      y = self._softmax_attention(q * jnp.asarray(scale, o.dtype), k, v, deterministic)
    y = constrain(y, ("batch", "length", "heads", "kv"))
    return HeadMerge(features, o.dtype, name="out")(y)

  def _softmax_attention(self, q, k, v, deterministic):
    """einsum + softmax (+ dropout on the weights), q already scaled; the weights before dropout are
    sown into ATTENTION_WEIGHTS (the other paths never form them). Head-major (b, h, n, d)
    operands keep each head's tokens contiguous for the batched matmuls, the layout XLA:CPU runs
    fastest (experiments/README.md, "attention layout")."""
    dtype = self.options.dtype
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    logits = einsum("bhqd,bhkd->bhqk", q, k, jnp.float32)  # softmax in float32
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    if not self.is_initializing():  # only when asked (see ATTENTION_WEIGHTS)
      self.sow(ATTENTION_WEIGHTS, "weights", weights)
    weights = nn.Dropout(self.options.attention_dropout_rate)(weights, deterministic=deterministic)
    return einsum("bhqk,bhkd->bhqd", weights, v, dtype).transpose(0, 2, 1, 3)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), each with optional drop-path.

  options.residual_scale multiplies each branch before it is added (LV-ViT uses 1 / skip_lam).
  """
  options: BlockOptions
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, drop_path_rate: Any = None) -> jax.Array:
    """drop_path_rate, when given, overrides the field (a traced per-layer rate under nn.scan)."""
    o = self.options
    rate = self.drop_path_rate if drop_path_rate is None else drop_path_rate
    y = layer_norm(o.layer_norm_epsilon, o.dtype, "LayerNorm_0")(x)
    y = MultiHeadDotProductAttention(o, name="MultiHeadDotProductAttention_0")(y, deterministic)
    y = nn.Dropout(o.dropout_rate)(y, deterministic=deterministic)
    y = checkpoint_name(y, "attention_out")
    x = x + DropPath()(self._scaled(y), deterministic, rate)
    x = constrain(x, ("batch", "length", "embed"))
    y = layer_norm(o.layer_norm_epsilon, o.dtype, "LayerNorm_1")(x)
    y = MlpBlock(o, name="MlpBlock_0")(y, deterministic)
    y = checkpoint_name(y, "mlp_out")
    x = x + DropPath()(self._scaled(y), deterministic, rate)
    return constrain(x, ("batch", "length", "embed"))

  def _scaled(self, y: jax.Array) -> jax.Array:
    scale = self.options.residual_scale
    return y if scale == 1.0 else y * jnp.asarray(scale, y.dtype)
