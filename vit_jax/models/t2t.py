"""T2T-ViT (Tokens-to-Token ViT, Yuan et al. 2021): a progressive soft-split tokenizer before a ViT.

The tokenizer re-splits the image three times with overlapping windows (torch `Unfold` semantics) and
mixes the tokens with a small "T2T layer" in between: a Performer (T2T-ViT-*) or a one-head transformer
(T2T-ViT_t-*). The backbone is a pre-norm ViT with a class token and a fixed sinusoid position table.

The Performer's random-feature matrix `w` is fixed but belongs to the checkpoint, so it lives in its own
variable collection, 'constants': apply with {'params': ..., 'constants': ...}. The sinusoid table is
not a variable at all: it is computed from the token count, so a new resolution recomputes it.
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.interface import ModelInterface
from vit_jax.models.layers import BlockOptions, Dense, check_images, constrain, logical
from vit_jax.models.layers import sinusoid_table  # noqa: F401  (part of this family's API)
from vit_jax.models.stack import Encoder
from vit_jax.models.variant import Variant

Dtype = Any
CONSTANTS = "constants"  # Collection of fixed, checkpointed, never-trained variables (Performer `w`).
_DENSE_INIT = nn.initializers.truncated_normal(stddev=0.02)  # The official init of every Linear.


def _windows(x: jax.Array, axis: int, kernel: int, stride: int, count: int) -> jax.Array:
  """Sliding windows along one axis: (..., L, ...) -> (..., count, kernel, ...), window o at o * stride.

  Reshapes the axis into blocks of `stride` and concatenates ceil(kernel/stride) shifted copies: a few
  slices and reshapes (exact, no FLOPs, quick to compile) instead of kernel^2 strided slices or a gather.
  """
  shifts = -(-kernel // stride)
  needed = stride * (count - 1 + shifts)
  if x.shape[axis] < needed:  # Padding past the last window's end is never kept.
    padding = [(0, 0)] * x.ndim
    padding[axis] = (0, needed - x.shape[axis])
    x = jnp.pad(x, padding)
  blocks = jax.lax.slice_in_dim(x, 0, needed, axis=axis)
  blocks = blocks.reshape(x.shape[:axis] + (count - 1 + shifts, stride) + x.shape[axis + 1:])
  shifted = [jax.lax.slice_in_dim(blocks, j, j + count, axis=axis) for j in range(shifts)]
  return jax.lax.slice_in_dim(jnp.concatenate(shifted, axis=axis + 1), 0, kernel, axis=axis + 1)


def soft_split(x: jax.Array, kernel: int, stride: int, padding: int) -> jax.Array:
  """torch.nn.Unfold on NHWC images, kept on the grid: (B, H, W, C) -> (B, H', W', C * kernel * kernel).

  Features are ordered (c, kh, kw) with c slowest, so reshaping to (B, H' * W', features) gives
  Unfold(...).transpose(1, 2) exactly (and lax.conv_general_dilated_patches, without its FLOPs).
  """
  batch, height, width, channels = x.shape
  out_h = (height + 2 * padding - kernel) // stride + 1
  out_w = (width + 2 * padding - kernel) // stride + 1
  if out_h < 1 or out_w < 1:
    raise ValueError(f"a {height}x{width} grid is too small for a soft split with kernel {kernel}, "
                     f"padding {padding}; use a larger image_size")
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  x = _windows(x, 1, kernel, stride, out_h)  # (B, out_h, kh, W + 2p, C)
  x = _windows(x, 3, kernel, stride, out_w)  # (B, out_h, kh, out_w, kw, C)
  x = x.transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(batch, out_h, out_w, channels * kernel * kernel)


def _dense(features: int, name: str, dtype: Dtype, use_bias: bool = True,
           axes: tuple[Optional[str], Optional[str]] = (None, None)) -> Dense:
  return Dense(features, use_bias=use_bias, dtype=dtype, name=name,
               kernel_init=logical(_DENSE_INIT, axes),
               bias_init=logical(nn.initializers.zeros, axes[1:]))


def _norm(epsilon: float, dtype: Dtype, name: str) -> nn.LayerNorm:
  """LayerNorm over a tokenizer width (147, 576, token_dim): small, so replicated (no logical axis)."""
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name,
                      scale_init=logical(nn.initializers.ones, (None,)),
                      bias_init=logical(nn.initializers.zeros, (None,)))


class TokenMlp(nn.Module):
  """Dense -> GELU -> Dense -> Dropout at the token width (the T2T layers' MLP, ratio 1)."""
  dropout_rate: float
  gelu_approximate: bool
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    features = x.shape[-1]
    x = nn.gelu(_dense(features, "Dense_0", self.dtype)(x), approximate=self.gelu_approximate)
    x = _dense(features, "Dense_1", self.dtype)(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class PerformerLayer(nn.Module):
  """The T2T-ViT-* token layer: linear-time Performer attention (one head), skip through v, MLP.

  Positive random features phi(u) = exp(u w^T - |u|^2 / 2) / sqrt(m) with the fixed `w` (m, token_dim)
  from the 'constants' collection; computed in float32 whatever the compute dtype (exp overflows).
  """
  token_dim: int
  kernel_ratio: float = 0.5
  dropout_rate: float = 0.1  # Hard-coded 0.1 in the official code, active in training.
  gelu_approximate: bool = False
  layer_norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    num_features = int(self.token_dim * self.kernel_ratio)
    if not self.is_initializing() and not self.has_variable(CONSTANTS, "w"):
      raise ValueError(
          "the Performer's fixed random features are missing: apply T2T-ViT (performer) with "
          "{'params': ..., 'constants': ...}, both from model.init or "
          "vit_jax.convert.from_torch_variables")
    w = self.variable(
        CONSTANTS, "w",
        lambda: logical(nn.initializers.orthogonal(scale=math.sqrt(num_features)), (None, None))(
            self.make_rng("params"), (num_features, self.token_dim), jnp.float32)).value
    y = _norm(self.layer_norm_epsilon, self.dtype, "norm1")(x)
    kqv = _dense(3 * self.token_dim, "kqv", self.dtype)(y).astype(jnp.float32)
    k, q, v = jnp.split(kqv, 3, axis=-1)

    def features(u):
      squared = jnp.sum(u * u, axis=-1, keepdims=True) / 2
      return jnp.exp(jnp.einsum("btd,md->btm", u, w) - squared) / math.sqrt(num_features)

    kp, qp = features(k), features(q)
    normalizer = jnp.einsum("btm,bm->bt", qp, jnp.sum(kp, axis=1))[..., None]
    kv = jnp.einsum("bsn,bsm->bnm", v, kp)
    y = (jnp.einsum("btm,bnm->btn", qp, kv) / (normalizer + 1e-8)).astype(self.dtype)
    y = _dense(self.token_dim, "proj", self.dtype)(y)
    x = v.astype(self.dtype) + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = _norm(self.layer_norm_epsilon, self.dtype, "norm2")(x)
    return x + TokenMlp(self.dropout_rate, self.gelu_approximate, self.dtype, name="mlp")(
        y, deterministic)


class TokenTransformerLayer(nn.Module):
  """The T2T-ViT_t-* token layer: one-head softmax attention to token_dim, skip through v, MLP.

  The attention scale is (input width)^-0.5 (147^-0.5, 576^-0.5), as in the official code.
  """
  token_dim: int
  gelu_approximate: bool = False
  layer_norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    scale = x.shape[-1] ** -0.5
    y = _norm(self.layer_norm_epsilon, self.dtype, "norm1")(x)
    qkv = _dense(3 * self.token_dim, "qkv", self.dtype, use_bias=False)(y)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    logits = jnp.einsum("bqd,bkd->bqk", q * jnp.asarray(scale, self.dtype), k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    y = _dense(self.token_dim, "proj", self.dtype)(jnp.einsum("bqk,bkd->bqd", weights, v))
    x = v + y
    y = _norm(self.layer_norm_epsilon, self.dtype, "norm2")(x)
    return x + TokenMlp(0.0, self.gelu_approximate, self.dtype, name="mlp")(y, deterministic)


class TokensToToken(nn.Module):
  """Soft split (7/4/2) -> T2T layer -> soft split (3/2/1) -> T2T layer -> soft split (3/2/1) -> Dense.

  (B, H, W, 3) -> (B, H/16 * W/16, hidden_size) for H, W multiples of 16.
  """
  hidden_size: int
  token_dim: int
  tokens_type: str
  performer_kernel_ratio: float = 0.5
  performer_dropout_rate: float = 0.1
  gelu_approximate: bool = False
  layer_norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  def _layer(self, name: str) -> nn.Module:
    common = dict(gelu_approximate=self.gelu_approximate, layer_norm_epsilon=self.layer_norm_epsilon,
                  dtype=self.dtype, name=name)
    if self.tokens_type == "performer":
      return PerformerLayer(self.token_dim, self.performer_kernel_ratio, self.performer_dropout_rate,
                            **common)
    if self.tokens_type == "transformer":
      return TokenTransformerLayer(self.token_dim, **common)
    raise ValueError(f"tokens_type must be 'performer' or 'transformer', got {self.tokens_type!r}")

  @nn.compact
  def __call__(self, images: jax.Array, deterministic: bool) -> jax.Array:
    grid = soft_split(images, kernel=7, stride=4, padding=2)
    for i in (1, 2):
      batch, height, width, features = grid.shape
      x = constrain(grid.reshape(batch, height * width, features), ("batch", "length", None))
      x = self._layer(f"attention{i}")(x, deterministic)
      grid = soft_split(x.reshape(batch, height, width, -1), kernel=3, stride=2, padding=1)
    x = grid.reshape(grid.shape[0], -1, grid.shape[-1])
    x = _dense(self.hidden_size, "project", self.dtype, axes=(None, "embed"))(x)
    return constrain(x, ("batch", "length", "embed"))


class T2TViT(nn.Module):
  """T2T-ViT: tokens-to-token tokenizer, class token, encoder, linear head on the class token.

  tokens_type: 'performer' (T2T-ViT-*) or 'transformer' (T2T-ViT_t-*). attention_scale: 'head_dim'
  (the paper and the official default) or 'embed_dim' (hidden_size^-0.5, what every released checkpoint
  was built with: pass it when loading them). num_classes=0 returns the class-token feature.
  """
  num_classes: Optional[int]
  image_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  token_dim: int = 64
  tokens_type: str = "performer"
  attention_scale: str = "head_dim"
  performer_kernel_ratio: float = 0.5
  performer_dropout_rate: float = 0.1
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  gelu_approximate: bool = False
  layer_norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scan_layers: bool = False    # one scanned block with a leading `layers` axis (see models/stack.py)
  remat_policy: str = "none"   # none | full | save_dots | save_named
  attention_impl: str = "auto"  # auto | xla | fused | cpu | pallas (models/attention_dispatch.py)

  @property
  def interface(self) -> ModelInterface:
    return ModelInterface(pooling="token", class_token=True, position_embedding="sinusoid",
                          representation_layer=False, dense_outputs=False)

  def block_options(self) -> BlockOptions:
    """Pre-norm blocks without q/k/v biases; the attention scale of `attention_scale`."""
    scale = self.hidden_size ** -0.5 if self.attention_scale == "embed_dim" else None
    return BlockOptions(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, gelu_approximate=self.gelu_approximate,
        layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype, qkv_bias=False,
        attention_scale=scale, attention_impl=self.attention_impl)

  def check_input(self, images: jax.Array) -> None:
    check_images(images, self.image_size, resize_hint="T2T-ViT's position table is recomputed for "
                 "it, the weights load unchanged")
    if self.attention_scale not in ("head_dim", "embed_dim"):
      raise ValueError(
          f"attention_scale must be 'head_dim' or 'embed_dim', got {self.attention_scale!r}")

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    self.check_input(images)
    x = TokensToToken(
        hidden_size=self.hidden_size, token_dim=self.token_dim, tokens_type=self.tokens_type,
        performer_kernel_ratio=self.performer_kernel_ratio,
        performer_dropout_rate=self.performer_dropout_rate, gelu_approximate=self.gelu_approximate,
        layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype,
        name="tokens_to_token")(images.astype(self.dtype), deterministic=not train)
    self.sow("intermediates", "stem_output", x)
    cls = self.param("cls", logical(_DENSE_INIT, (None, None, "embed")), (1, 1, self.hidden_size))
    cls = jnp.broadcast_to(jnp.asarray(cls, self.dtype), (x.shape[0], 1, self.hidden_size))
    x = jnp.concatenate([cls, x], axis=1)
    # Fixed sinusoid positions; drop-path rates linear in depth, as in the official code.
    x = Encoder(
        self.block_options(), self.num_layers, stochastic_depth=self.stochastic_depth,
        scan_layers=self.scan_layers, remat_policy=self.remat_policy,
        position_embedding="sinusoid", name="Transformer")(x, deterministic=not train)
    self.sow("intermediates", "encoded", x)
    x = x[:, 0]
    self.sow("intermediates", "head_input", x)
    if not self.num_classes:
      return x
    x = _dense(self.num_classes, "head", self.dtype, axes=("embed", "classes"))(x)
    return x.astype(jnp.float32)


def _t2t(hidden_size, num_layers, num_heads, mlp_ratio, tokens_type="performer", **extra):
  return Variant(T2TViT, dict(
      hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
      mlp_dim=int(hidden_size * mlp_ratio), tokens_type=tokens_type, **extra))


# Dimensions of the official models/t2t_vit.py constructors (token_dim 64):
# docs/architectures.md#t2t-variants.
VARIANTS: dict[str, Variant] = {
    "T2T-ViT-7": _t2t(256, 7, 4, 2.0),
    "T2T-ViT-10": _t2t(256, 10, 4, 2.0),
    "T2T-ViT-12": _t2t(256, 12, 4, 2.0),
    "T2T-ViT-14": _t2t(384, 14, 6, 3.0),
    "T2T-ViT-19": _t2t(448, 19, 7, 3.0),
    "T2T-ViT-24": _t2t(512, 24, 8, 3.0),
    "T2T-ViT_t-14": _t2t(384, 14, 6, 3.0, "transformer"),
    "T2T-ViT_t-19": _t2t(448, 19, 7, 3.0, "transformer"),
    "T2T-ViT_t-24": _t2t(512, 24, 8, 3.0, "transformer"),
    # Small variants for tests (32 px -> 4 tokens).
    "T2T-ViT-test": _t2t(32, 1, 2, 2.0, token_dim=16, image_size=32),
    "T2T-ViT_t-test": _t2t(32, 1, 2, 2.0, "transformer", token_dim=16, image_size=32),
}
