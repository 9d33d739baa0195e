"""LV-ViT (Jiang et al. 2021, "All Tokens Matter"): a ViT with a BatchNorm conv stem, residual branches
scaled by 1/skip_lam and a dense auxiliary head on the patch tokens (docs/architectures.md#lvvit).

Numerics follow the official code (zihangJiang/TokenLabeling tlt/models/lvvit.py): q/k/v without bias,
LayerNorm eps 1e-5, exact GELU, BatchNorm eps 1e-5 with torch's momentum 0.1. The evaluated output is
x_cls + 0.5 * max over tokens of x_aux; `return_dense=True` exposes (x_cls, x_aux, MixToken box) for
token labeling (vit_jax/train/token_labeling.py).
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.interface import DenseOutput, ModelInterface
from vit_jax.models.layers import BlockOptions, Dense, check_images, constrain, logical
from vit_jax.models.stack import Encoder
from vit_jax.models.variant import Variant

Dtype = Any

# The official weights (and timm's trunc_normal_(std=.02), which truncates at +-2 absolute) are N(0, 0.02).
_NORMAL_002 = nn.initializers.normal(stddev=0.02)
# torch's default Conv2d init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
_TORCH_CONV = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def sample_mixtoken_box(rng: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
  """Draws the official MixToken box: lam ~ Beta(1, 1), side int(size * sqrt(1 - lam)), uniform centre.

  Beta(1, 1) is Uniform(0, 1) (the official code fixes beta = 1.0); drawing it as such keeps the
  compiled step free of the gamma sampler. Returns int32 (row_start, col_start, row_end, col_end), each
  edge clipped to the grid.
  """
  lam_key, row_key, col_key = jax.random.split(rng, 3)
  cut_ratio = jnp.sqrt(1.0 - jax.random.uniform(lam_key))
  cut_h = jnp.floor(grid_h * cut_ratio).astype(jnp.int32)
  cut_w = jnp.floor(grid_w * cut_ratio).astype(jnp.int32)
  row = jax.random.randint(row_key, (), 0, grid_h)
  col = jax.random.randint(col_key, (), 0, grid_w)
  return jnp.stack([jnp.clip(row - cut_h // 2, 0, grid_h), jnp.clip(col - cut_w // 2, 0, grid_w),
                    jnp.clip(row + cut_h // 2, 0, grid_h), jnp.clip(col + cut_w // 2, 0, grid_w)])


def box_mask(box: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
  """(grid_h, grid_w) bool: True inside rows [box[0], box[2]) and columns [box[1], box[3])."""
  rows = jnp.arange(grid_h)[:, None]
  cols = jnp.arange(grid_w)[None, :]
  return (rows >= box[0]) & (rows < box[2]) & (cols >= box[1]) & (cols < box[3])


def swap_box_with_reversed_batch(x: jax.Array, box: jax.Array) -> jax.Array:
  """x (B, H, W, C): inside the box, example b takes the values of example B-1-b (MixToken)."""
  mask = box_mask(box, x.shape[1], x.shape[2])[None, :, :, None]
  return jnp.where(mask, x[::-1], x)


def mixtoken_lam(box: jax.Array, num_tokens: int) -> jax.Array:
  """Fraction of tokens an example keeps from its own image: 1 - box area / tokens."""
  area = (box[2] - box[0]) * (box[3] - box[1])
  return 1.0 - area.astype(jnp.float32) / num_tokens


class ConvStem(nn.Module):
  """The official patch embedding '4_2' (channels=64) or '4_2_128' (channels=128).

  Conv 7x7/2 -> BN -> ReLU -> [Conv 3x3 -> BN -> ReLU] x 2 (no conv biases), then a (p/2)x(p/2) conv with
  stride p/2 to the hidden size (with bias): total stride p. Returns the (B, H/p, W/p, hidden) map.
  """
  channels: int
  hidden_size: int
  patch_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i, (kernel, stride) in enumerate(((7, 2), (3, 1), (3, 1)), start=1):
      pad = kernel // 2
      x = nn.Conv(
          self.channels, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
          use_bias=False, dtype=self.dtype, name=f"conv{i}",
          kernel_init=logical(_TORCH_CONV, (None, None, "conv_in", "conv_out")))(x)
      # torch momentum 0.1 (new = 0.9 old + 0.1 batch) is flax momentum 0.9.
      x = nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
          use_fast_variance=False, name=f"bn{i}",
          scale_init=logical(nn.initializers.ones, ("conv_out",)),
          bias_init=logical(nn.initializers.zeros, ("conv_out",)))(x)
      x = nn.relu(x)
    half = self.patch_size // 2
    return nn.Conv(
        self.hidden_size, (half, half), strides=(half, half), padding="VALID", dtype=self.dtype,
        name="proj", kernel_init=logical(_TORCH_CONV, (None, None, "conv_in", "embed")),
        bias_init=logical(nn.initializers.zeros, ("embed",)))(x)


class LVViT(nn.Module):
  """LV-ViT. `model.apply(variables, images_nhwc, train=False)` returns float32 class logits.

  variables = {'params': ..., 'batch_stats': ...} (the stem's BatchNorm statistics); with train=True pass
  mutable=['batch_stats'] and rngs={'dropout': key} (dropout, stochastic depth and MixToken draw from it).
  The logits are x_cls + 0.5 * max_tokens(x_aux) in training and evaluation alike, so a plain
  cross-entropy trainer optimizes exactly what is evaluated (the official eval output). With
  return_dense=True the model returns a DenseOutput for token labeling instead; MixToken (mix_token=True)
  then mixes the patch tokens of training batches. num_classes=0 returns the class-token feature
  (B, hidden). Intermediates stem_output, encoded (the final-LN features of all tokens, (B, 1 + tokens,
  hidden)) and head_input: apply with mutable=['intermediates'] (models/interface.py).

  The encoder is the ViT's (posembed_input, encoderblock_i, encoder_norm), so the checkpoint tools
  (position-embedding resize, scanned <-> unrolled layouts) apply unchanged.
  """
  num_classes: Optional[int]
  image_size: int
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  stem_channels: int = 64  # 64: official p_emb '4_2'; 128: '4_2_128' (LV-ViT-L)
  skip_lam: float = 1.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_norm_epsilon: float = 1e-5
  return_dense: bool = False
  mix_token: bool = False
  dtype: Dtype = jnp.float32
  scan_layers: bool = False    # one scanned block with a leading `layers` axis (see models/stack.py)
  remat_policy: str = "none"   # none | full | save_dots | save_named
  attention_impl: str = "auto"  # auto | xla | fused | cpu | pallas (models/attention_dispatch.py)

  @property
  def interface(self) -> ModelInterface:
    return ModelInterface(pooling="token+aux_max", class_token=True, position_embedding="learned",
                          representation_layer=False, dense_outputs=True)

  def block_options(self) -> BlockOptions:
    """No q/k/v biases, exact GELU, residual branches scaled by 1 / skip_lam (the official blocks)."""
    return BlockOptions(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, gelu_approximate=False,
        layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype, qkv_bias=False,
        residual_scale=1.0 / self.skip_lam, attention_impl=self.attention_impl)

  def check_input(self, images: jax.Array) -> None:
    if self.patch_size % 2:
      raise ValueError(f"patch_size must be even (the stem halves the resolution before a patch_size/2 "
                       f"projection), got {self.patch_size}")
    check_images(images, self.image_size, self.patch_size)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False,
               mix_box: Optional[jax.Array] = None) -> Any:
    """images (B, H, W, 3) -> logits (B, classes), a DenseOutput, or features (see the class doc).

    mix_box: with mix_token and train, use this (4,) box instead of drawing one (tests, custom samplers).
    """
    self.check_input(images)
    x = ConvStem(self.stem_channels, self.hidden_size, self.patch_size, self.dtype,
                 name="stem")(images.astype(self.dtype), train)
    batch, grid_h, grid_w, _ = x.shape
    tokens = (batch, grid_h * grid_w, self.hidden_size)
    self.sow("intermediates", "stem_output", jnp.reshape(x, tokens))
    mixing = train and self.mix_token
    if mixing and not self.return_dense:
      raise ValueError("mix_token=True trains with return_dense=True: the loss must see the MixToken "
                       "box and the per-token logits (vit_jax.train.token_labeling)")
    if mixing:
      if mix_box is None:
        mix_box = sample_mixtoken_box(self.make_rng("dropout"), grid_h, grid_w)
      mix_box = jnp.asarray(mix_box, jnp.int32)
      x = swap_box_with_reversed_batch(x, mix_box)
    else:
      mix_box = jnp.zeros((4,), jnp.int32)
    x = jnp.reshape(x, tokens)
    cls = self.param("cls", logical(_NORMAL_002, (None, None, "embed")), (1, 1, self.hidden_size))
    cls = jnp.broadcast_to(jnp.asarray(cls, self.dtype), (batch, 1, self.hidden_size))
    x = constrain(jnp.concatenate([cls, x], axis=1), ("batch", "length", "embed"))
    # Drop-path rates grow linearly from 0 to stochastic_depth, the official 'linear' decay.
    x = Encoder(
        self.block_options(), self.num_layers, stochastic_depth=self.stochastic_depth,
        scan_layers=self.scan_layers, remat_policy=self.remat_policy,
        name="Transformer")(x, deterministic=not train)
    self.sow("intermediates", "encoded", x)
    self.sow("intermediates", "head_input", x[:, 0])
    if not self.num_classes:
      return x[:, 0].astype(jnp.float32)

    def head(name):
      return Dense(
          self.num_classes, dtype=self.dtype, name=name,
          kernel_init=logical(_NORMAL_002, ("embed", "classes")),
          bias_init=logical(nn.initializers.zeros, ("classes",)))

    x_cls = head("head")(x[:, 0]).astype(jnp.float32)
    x_aux = head("aux_head")(x[:, 1:]).astype(jnp.float32)
    if self.return_dense:
      if mixing:  # each token's prediction goes back to the example whose image it came from
        grid = x_aux.reshape(batch, grid_h, grid_w, self.num_classes)
        x_aux = swap_box_with_reversed_batch(grid, mix_box).reshape(x_aux.shape)
      return DenseOutput(x_cls, x_aux, mix_box)
    return x_cls + 0.5 * jnp.max(x_aux, axis=1)


def _lvvit(hidden_size, num_layers, num_heads, skip_lam, stem_channels=64, patch_size=16, **defaults):
  """MLP ratio 3 throughout; defaults override the 1000-class, 224-pixel registry defaults."""
  return Variant(LVViT, dict(
      hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, mlp_dim=3 * hidden_size,
      skip_lam=skip_lam, stem_channels=stem_channels, patch_size=patch_size),
      defaults={"num_classes": 1000, "image_size": 224, **defaults})


# Official lvvit_t / lvvit_s / lvvit_m / lvvit_l (docs/architectures.md#lvvit-variants).
VARIANTS: dict[str, Variant] = {
    "LV-ViT-T": _lvvit(240, 12, 4, 1.0),
    "LV-ViT-S": _lvvit(384, 16, 6, 2.0),
    "LV-ViT-M": _lvvit(512, 20, 8, 2.0),
    "LV-ViT-L": _lvvit(768, 24, 12, 3.0, stem_channels=128),
    # Tests: 32 px images, 8 px patches (a 4x4 token grid), an 8-channel stem; about 30k parameters.
    "LV-ViT-test": _lvvit(32, 2, 2, 2.0, stem_channels=8, patch_size=8, num_classes=10, image_size=32),
}
