"""Transformer in Transformer (TNT, Han et al. 2021): a pixel-level transformer inside every patch.

Each 16x16 patch is cut into 4x4 "words" by its own 7x7/4 convolution (every patch zero-padded on its
own). An inner transformer mixes the words of each patch; after every inner block the words of a patch
are flattened and projected onto that patch's token, and an outer ViT-style transformer mixes the
patches. Op order, eps and activations follow the official code (= timm `tnt_s_patch16_224`), see
docs/architectures.md#tnt-op-order.
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.interface import ModelInterface
from vit_jax.models.layers import (BlockOptions, Dense, EncoderBlock, check_images, constrain,
                                   layer_norm, logical)
from vit_jax.models.stack import layer_stack
from vit_jax.models.variant import Variant

Dtype = Any
PIXEL_KERNEL_SIZE = 7  # The official pixel embedding: Conv 7x7, padding 3, stride inner_stride.


def words_per_side(patch_size: int, inner_stride: int) -> int:
  """Side of the word grid one patch yields: ceil(patch / stride) (7x7 kernel, padding 3)."""
  return math.ceil(patch_size / inner_stride)


class PixelsToPatch(nn.Module):
  """Flattened words of a patch -> one patch-token update: LN(words*c) -> Dense(d) -> LN(d).

  TNT uses it twice: with a bias to make the initial patch tokens, without one inside every block.
  """
  features: int
  use_bias: bool
  layer_norm_epsilon: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, words: jax.Array, num_patches: int) -> jax.Array:
    """words (batch * patches, words, inner_dim) -> (batch, patches, features)."""
    num_words, inner_dim = words.shape[1:]
    x = jnp.reshape(words, (-1, num_patches, num_words * inner_dim))  # word-major, then channel.
    x = layer_norm(self.layer_norm_epsilon, self.dtype, "pixels_norm")(x)
    x = Dense(
        self.features, use_bias=self.use_bias, dtype=self.dtype, name="dense",
        kernel_init=logical(nn.initializers.xavier_uniform(), (None, "embed")),
        bias_init=logical(nn.initializers.zeros, ("embed",)))(x)
    return layer_norm(self.layer_norm_epsilon, self.dtype, "patch_norm")(x)


class TntBlock(nn.Module):
  """Inner transformer on the words, words -> patch tokens (class token untouched), outer transformer.

  One layer of the stack (models/stack.py): carries (words, patch tokens) and applies one drop-path
  rate to the residual branches of both blocks, as the official code does.
  """
  inner: BlockOptions
  outer: BlockOptions
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array], deterministic: bool,
               drop_path_rate: Any = None) -> tuple[jax.Array, jax.Array]:
    """carry: words (batch * patches, words, inner_dim), patches (batch, 1 + patches, outer_dim)."""
    words, patches = carry
    rate = self.drop_path_rate if drop_path_rate is None else drop_path_rate
    words = EncoderBlock(self.inner, name="inner_encoder")(words, deterministic, rate)
    update = PixelsToPatch(
        patches.shape[-1], use_bias=False, layer_norm_epsilon=self.outer.layer_norm_epsilon,
        dtype=self.outer.dtype, name="pixels_to_patch")(words, patches.shape[1] - 1)
    patches = jnp.concatenate([patches[:, :1], patches[:, 1:] + update], axis=1)
    patches = EncoderBlock(self.outer, name="outer_encoder")(patches, deterministic, rate)
    return words, patches


class TransformerInTransformer(nn.Module):
  """TNT classifier: pixel (word) embedding, patch embedding with class token, TNT blocks, head on cls.

  Apply as `model.apply({'params': params}, images_nhwc, train=False)`; pass rngs={'dropout': key}
  when training with dropout or stochastic depth.
  """
  num_classes: Optional[int]
  image_size: int
  patch_size: int
  inner_stride: int
  outer_dim: int
  inner_dim: int
  num_layers: int
  outer_num_heads: int
  inner_num_heads: int
  outer_mlp_ratio: float = 4.0
  inner_mlp_ratio: float = 4.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  gelu_approximate: bool = False
  layer_norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scan_layers: bool = False    # one scanned TntBlock `block`, leading `layers` axis (models/stack.py)
  remat_policy: str = "none"   # none | full | save_dots | save_named (per TntBlock)
  attention_impl: str = "auto"  # auto | xla | fused | cpu | pallas (models/attention_dispatch.py)

  @property
  def interface(self) -> ModelInterface:
    return ModelInterface(pooling="token", class_token=True, position_embedding="learned",
                          representation_layer=False, dense_outputs=False)

  def block_options(self, level: str) -> BlockOptions:
    """The inner (word) or outer (patch) blocks: no q/k/v biases, the official eps and GELU."""
    dim, ratio, heads = {
        "inner": (self.inner_dim, self.inner_mlp_ratio, self.inner_num_heads),
        "outer": (self.outer_dim, self.outer_mlp_ratio, self.outer_num_heads)}[level]
    return BlockOptions(
        mlp_dim=int(dim * ratio), num_heads=heads, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, gelu_approximate=self.gelu_approximate,
        layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype, qkv_bias=False,
        attention_impl=self.attention_impl)

  def check_input(self, images: jax.Array) -> None:
    check_images(images, self.image_size, self.patch_size)

  def embed_pixels(self, images: jax.Array) -> jax.Array:
    """(B, H, W, 3) -> words (B * patches, words_per_side**2, inner_dim), with pixel positions added.

    Every patch is convolved on its own, so the zero padding of the 7x7 kernel is per patch.
    """
    batch, height, width, channels = images.shape
    p = self.patch_size
    rows, cols = height // p, width // p
    x = jnp.reshape(images, (batch, rows, p, cols, p, channels))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(batch * rows * cols, p, p, channels)
    pad = PIXEL_KERNEL_SIZE // 2
    x = nn.Conv(
        self.inner_dim, (PIXEL_KERNEL_SIZE,) * 2, strides=(self.inner_stride,) * 2,
        padding=((pad, pad), (pad, pad)), dtype=self.dtype, name="pixel_embedding",
        kernel_init=logical(nn.initializers.lecun_normal(), (None, None, None, "embed")),
        bias_init=logical(nn.initializers.zeros, ("embed",)))(x)
    words = jnp.reshape(x, (x.shape[0], -1, self.inner_dim))  # row-major word order.
    side = words_per_side(p, self.inner_stride)
    pixel_pos = self.param(
        "pixel_pos_embedding",
        logical(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
        (1, side * side, self.inner_dim))
    return words + jnp.asarray(pixel_pos, self.dtype)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    self.check_input(images)
    batch = images.shape[0]
    num_patches = (self.image_size // self.patch_size) ** 2
    words = constrain(self.embed_pixels(images.astype(self.dtype)), ("batch", "length", "embed"))
    patches = PixelsToPatch(
        self.outer_dim, use_bias=True, layer_norm_epsilon=self.layer_norm_epsilon,
        dtype=self.dtype, name="patch_embedding")(words, num_patches)
    self.sow("intermediates", "stem_output", patches)
    cls = self.param("cls", logical(nn.initializers.zeros, (None, None, "embed")),
                     (1, 1, self.outer_dim))
    cls = jnp.broadcast_to(jnp.asarray(cls, self.dtype), (batch, 1, self.outer_dim))
    patches = jnp.concatenate([cls, patches], axis=1)
    patch_pos = self.param(
        "patch_pos_embedding",
        logical(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
        (1, num_patches + 1, self.outer_dim))
    patches = patches + jnp.asarray(patch_pos, self.dtype)
    patches = nn.Dropout(self.dropout_rate)(patches, deterministic=not train)
    patches = constrain(patches, ("batch", "length", "embed"))
    # Stochastic depth grows linearly with depth (0 in the first block), as in the official code.
    _, patches = layer_stack(
        TntBlock, (words, patches), not train, name="block", num_layers=self.num_layers,
        stochastic_depth=self.stochastic_depth, scan_layers=self.scan_layers,
        remat_policy=self.remat_policy, inner=self.block_options("inner"),
        outer=self.block_options("outer"))
    x = layer_norm(self.layer_norm_epsilon, self.dtype, "encoder_norm")(patches)
    self.sow("intermediates", "encoded", x)
    x = x[:, 0]
    self.sow("intermediates", "head_input", x)
    if not self.num_classes:
      return x
    x = Dense(
        self.num_classes, dtype=self.dtype, name="head",
        kernel_init=logical(nn.initializers.zeros, ("embed", "classes")),
        bias_init=logical(nn.initializers.zeros, ("classes",)))(x)
    return x.astype(jnp.float32)


def _tnt(outer_dim, inner_dim, num_layers, outer_num_heads, inner_num_heads, patch_size=16,
         inner_stride=4, **extra):
  return Variant(TransformerInTransformer, dict(
      outer_dim=outer_dim, inner_dim=inner_dim, num_layers=num_layers,
      outer_num_heads=outer_num_heads, inner_num_heads=inner_num_heads, patch_size=patch_size,
      inner_stride=inner_stride, **extra))


# Dimensions from the TNT paper / official code (docs/architectures.md#tnt-variants).
VARIANTS: dict[str, Variant] = {
    "TNT-S/16": _tnt(384, 24, 12, 6, 4),
    "TNT-B/16": _tnt(640, 40, 12, 10, 4),
    # A small variant for tests: 32 px images, 4x4 patches of 8 px, 4x4 words of 2 px per patch.
    "TNT-test": _tnt(32, 8, 2, 4, 2, patch_size=8, inner_stride=2, image_size=32),
}
