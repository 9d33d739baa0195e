"""The Vision Transformer (Dosovitskiy et al. 2021) with the public vit_jax parameter layout."""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import masked_patches
from vit_jax.models.interface import DenseOutput, MaskedPatchOutput, ModelInterface
from vit_jax.models.layers import BlockOptions, Dense, check_images, constrain, logical
from vit_jax.models.precision import patch_embedding_conv
from vit_jax.models.stack import Encoder
from vit_jax.models.variant import Variant

Dtype = Any


class VisionTransformer(nn.Module):
  """ViT: patch embedding, optional class token, encoder, pooling, optional pre-logits, linear head.

  Apply as `model.apply({'params': params}, images_nhwc, train=False)`; pass rngs={'dropout': key}
  when training with dropout or stochastic depth.

  token_head=True (class-token models only) adds 'aux_head', a linear head applied to every patch
  token, so the model has dense outputs for token labeling (models/interface.py); with
  return_dense=True it then returns a DenseOutput (no MixToken: its box is all zeros). The logits
  stay the class token's either way.

  masked_patch_prediction=True adds what the paper's self-supervised pretraining needs
  (docs/architectures.md#masked-patch-prediction): 'mask_embedding', the learnable [mask] embedding,
  and 'mpp_head', a linear 512-way head on every patch token (the 3-bit mean colour of its patch).
  With return_dense=True the patch embeddings are corrupted (models/masked_patches.py) before the
  class token and position embeddings are added, drawn from the 'dropout' rng stream (the one the
  train step passes; pass it with train=False too, to evaluate on corrupted inputs without dropout),
  and the model returns a MaskedPatchOutput. Without return_dense nothing is corrupted and the model
  is the plain classifier (fine-tuning loads it without these two parameters).
  """
  num_classes: Optional[int]
  image_size: int
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  classifier: str = "token"
  representation_size: Optional[int] = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  gelu_approximate: bool = True
  layer_norm_epsilon: float = 1e-6
  head_bias_init: float = 0.0
  token_head: bool = False
  masked_patch_prediction: bool = False
  return_dense: bool = False
  dtype: Dtype = jnp.float32
  scan_layers: bool = False    # one scanned block with a leading `layers` axis (see models/stack.py)
  remat_policy: str = "none"   # none | full | save_dots | save_named
  attention_impl: str = "auto"  # auto | xla | fused | cpu | pallas (models/attention_dispatch.py)

  @property
  def interface(self) -> ModelInterface:
    return ModelInterface(
        pooling=self.classifier, class_token=self.classifier == "token",
        position_embedding="learned", representation_layer=self.representation_size is not None,
        dense_outputs=self.token_head, masked_patch_prediction=self.masked_patch_prediction)

  def block_options(self) -> BlockOptions:
    return BlockOptions(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, gelu_approximate=self.gelu_approximate,
        layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype,
        attention_impl=self.attention_impl)

  def check_input(self, images: jax.Array) -> None:
    check_images(images, self.image_size, self.patch_size)
    if self.token_head and (self.classifier != "token" or self.representation_size is not None):
      raise ValueError("token_head=True needs classifier='token' and no representation layer (the "
                       "per-token head reads the encoder's tokens as the class head reads its token)")
    if self.token_head and self.masked_patch_prediction:
      raise ValueError("token_head=True and masked_patch_prediction=True both define what "
                       "return_dense=True returns; set one of them")
    if self.return_dense and not (self.token_head or self.masked_patch_prediction):
      raise ValueError("return_dense=True needs token_head=True or masked_patch_prediction=True: "
                       "without either there are no per-token logits")

  def embed_patches(self, images: jax.Array) -> jax.Array:
    x = nn.Conv(
        self.hidden_size, (self.patch_size, self.patch_size), strides=(self.patch_size,) * 2,
        padding="VALID", dtype=self.dtype, name="embedding",
        conv_general_dilated=patch_embedding_conv(self.dtype),
        kernel_init=logical(nn.initializers.lecun_normal(), (None, None, None, "embed")),
        bias_init=logical(nn.initializers.zeros, ("embed",)))(images)
    batch, height, width, channels = x.shape
    return jnp.reshape(x, (batch, height * width, channels))

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    if self.classifier not in ("token", "gap"):
      raise ValueError(f"classifier must be 'token' or 'gap', got {self.classifier!r}")
    self.check_input(images)
    x = self.embed_patches(images.astype(self.dtype))
    self.sow("intermediates", "stem_output", x)
    corrupted = None
    if self.masked_patch_prediction:
      mask_embedding = self.param("mask_embedding", logical(nn.initializers.normal(0.02), ("embed",)),
                                  (self.hidden_size,))
      if self.return_dense:
        x, corrupted = masked_patches.corrupt_patches(self.make_rng("dropout"), x, mask_embedding)
    if self.classifier == "token":
      cls = self.param("cls", logical(nn.initializers.zeros, (None, None, "embed")),
                       (1, 1, self.hidden_size))
      cls = jnp.broadcast_to(jnp.asarray(cls, self.dtype), (x.shape[0], 1, self.hidden_size))
      x = jnp.concatenate([cls, x], axis=1)
    x = constrain(x, ("batch", "length", "embed"))
    x = Encoder(
        self.block_options(), self.num_layers, stochastic_depth=self.stochastic_depth,
        scan_layers=self.scan_layers, remat_policy=self.remat_policy,
        name="Transformer")(x, deterministic=not train)
    self.sow("intermediates", "encoded", x)
    tokens = x[:, 1:] if self.classifier == "token" else x
    x = x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
    if self.representation_size is not None:
      x = Dense(
          self.representation_size, dtype=self.dtype, name="pre_logits",
          kernel_init=logical(nn.initializers.lecun_normal(), ("embed", "mlp")),
          bias_init=logical(nn.initializers.zeros, ("mlp",)))(x)
      x = jnp.tanh(x)
      head_in = "mlp"
    else:
      head_in = "embed"
    self.sow("intermediates", "head_input", x)
    if not self.num_classes:
      return x
    def head(name, features):
      return Dense(
          self.num_classes, dtype=self.dtype, name=name,
          kernel_init=logical(nn.initializers.zeros, (head_in, "classes")),
          bias_init=logical(nn.initializers.constant(self.head_bias_init), ("classes",)))(features)

    logits = head("head", x).astype(jnp.float32)
    if self.masked_patch_prediction:
      patch_logits = Dense(
          masked_patches.COLOUR_CLASSES, dtype=self.dtype, name="mpp_head",
          kernel_init=logical(nn.initializers.zeros, ("embed", "classes")),
          bias_init=logical(nn.initializers.zeros, ("classes",)))(tokens).astype(jnp.float32)
      if self.return_dense:
        return MaskedPatchOutput(logits, patch_logits, corrupted)
      return logits
    if not self.token_head:
      return logits
    token_logits = head("aux_head", tokens).astype(jnp.float32)
    if self.return_dense:
      return DenseOutput(logits, token_logits, jnp.zeros((4,), jnp.int32))
    return logits


def _vit(hidden_size, mlp_dim, num_heads, num_layers, patch_size, **extra):
  return Variant(VisionTransformer, dict(
      hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, num_layers=num_layers,
      patch_size=patch_size, **extra))


# Dimensions from the ViT paper (Table 1) and the public vit_jax configs (Ti and S from DeiT/AugReg).
VARIANTS: dict[str, Variant] = {
    "ViT-Ti/16": _vit(192, 768, 3, 12, 16),
    "ViT-S/16": _vit(384, 1536, 6, 12, 16),
    "ViT-S/32": _vit(384, 1536, 6, 12, 32),
    "ViT-B/8": _vit(768, 3072, 12, 12, 8),
    "ViT-B/16": _vit(768, 3072, 12, 12, 16),
    "ViT-B/32": _vit(768, 3072, 12, 12, 32),
    "ViT-L/16": _vit(1024, 4096, 16, 24, 16),
    "ViT-L/32": _vit(1024, 4096, 16, 24, 32),
    "ViT-H/14": _vit(1280, 5120, 16, 32, 14),
    # From "Scaling Vision Transformers" (Zhai et al. 2022), for planning pod-scale runs.
    "ViT-g/14": _vit(1408, 6144, 16, 40, 14),
    # Small variants for tests and the embedded default job.
    "ViT-testing": _vit(10, 10, 2, 1, 16),
    "ViT-micro/4": _vit(32, 64, 2, 2, 4, image_size=16),
    "ViT-tiny/4": _vit(64, 128, 4, 4, 4, image_size=16),
}
