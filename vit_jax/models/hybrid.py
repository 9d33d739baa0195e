"""The hybrid ViT (Dosovitskiy et al. 2021, Sec. 3.1): patch embedding applied to a ResNet feature map.

A ResNet root (7x7/2 StdConv, GroupNorm, ReLU, 3x3/2 max-pool, all 'SAME') and post-activation stages
turn the image into a feature map; `embedding` cuts it into patch_size x patch_size patches (1x1 for the
R50/R26 models) and the rest is the plain ViT. Parameter names are those of the public checkpoints:
conv_root, gn_root, block1/unit1/{conv1,gn1,...,conv_proj,gn_proj}, embedding, cls, Transformer/..., head.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.layers import logical
from vit_jax.models.resnet import BottleneckUnit, Stage, StdConv, feature_map, group_norm
from vit_jax.models.variant import Variant
from vit_jax.models.vit import VisionTransformer


class HybridVisionTransformer(VisionTransformer):
  """ViT on ResNet features. resnet_layers=() keeps only the root (R+ViT-Ti/16).

  Numerics default to the official JAX model (GroupNorm eps 1e-6, StdConv (w - mean) / (std + 1e-5),
  tanh GELU); timm uses group_norm_epsilon=1e-5, weight_std_epsilon=1e-8, weight_std_form='sqrt_var'
  and gelu_approximate=False.
  """
  resnet_layers: tuple[int, ...] = (3, 4, 9)  # units per stage
  resnet_width_factor: float = 1.0  # stage i has bottlenecks of 64 * resnet_width_factor * 2**i channels
  resnet_root_width: Optional[int] = None  # channels of the root conv (timm stem_chs); None: 64 * factor
  num_groups: int = 32
  group_norm_epsilon: float = 1e-6
  weight_std_epsilon: float = 1e-5
  weight_std_form: str = "std"

  @property
  def feature_stride(self) -> int:
    """Downsampling of the ResNet part: 4 in the root, 2 in every stage after the first."""
    return 4 * 2 ** max(len(self.resnet_layers) - 1, 0)

  def check_input(self, images: jax.Array) -> None:
    stride = self.feature_stride * self.patch_size
    if self.image_size % stride:
      raise ValueError(
          f"image_size {self.image_size} is not a multiple of the hybrid's total stride {stride} "
          f"(ResNet stride {self.feature_stride} x patch_size {self.patch_size}); pick an image size "
          "that is")
    super().check_input(images)

  def embed_patches(self, images: jax.Array) -> jax.Array:
    norms = dict(num_groups=self.num_groups, group_norm_epsilon=self.group_norm_epsilon,
                 weight_std_epsilon=self.weight_std_epsilon, weight_std_form=self.weight_std_form,
                 dtype=self.dtype)
    width = int(64 * self.resnet_width_factor)
    x = StdConv(self.resnet_root_width or width, 7, strides=2, padding="SAME",
                epsilon=self.weight_std_epsilon, form=self.weight_std_form, dtype=self.dtype,
                name="conv_root")(images)
    x = group_norm(self.num_groups, self.group_norm_epsilon, self.dtype, "gn_root")(x)
    # window_shape by keyword: the ONNX converter (jax2onnx) replaces max_pool with one that
    # takes it only so (vit_jax/export/onnx_model.py).
    x = nn.max_pool(nn.relu(x), window_shape=(3, 3), strides=(2, 2), padding="SAME")
    x = feature_map(x)
    for i, num_units in enumerate(self.resnet_layers):
      x = Stage(unit=BottleneckUnit, unit_name="unit{}", num_units=num_units, features=width * 2 ** i,
                first_stride=1 if i == 0 else 2, name=f"block{i + 1}", **norms)(x)
    x = nn.Conv(
        self.hidden_size, (self.patch_size, self.patch_size), strides=(self.patch_size,) * 2,
        padding="VALID", dtype=self.dtype, name="embedding",
        kernel_init=logical(nn.initializers.lecun_normal(), (None, None, "conv_in", "embed")),
        bias_init=logical(nn.initializers.zeros, ("embed",)))(x)
    batch, height, width, channels = x.shape
    return jnp.reshape(x, (batch, height * width, channels))


def _hybrid(resnet_layers, hidden_size, mlp_dim, num_heads, num_layers, patch_size, **extra):
  return Variant(HybridVisionTransformer, dict(
      resnet_layers=resnet_layers, hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads,
      num_layers=num_layers, patch_size=patch_size, **extra))


# The public vit_jax hybrid configs (configs/models.py); counts in docs/checkpoint_format.md#model-family.
VARIANTS: dict[str, Variant] = {
    "R50+ViT-B/16": _hybrid((3, 4, 9), 768, 3072, 12, 12, 1),
    "R26+ViT-S/32": _hybrid((2, 2, 2, 2), 384, 1536, 6, 12, 1),
    "R26+ViT-B/32": _hybrid((2, 2, 2, 2), 768, 3072, 12, 12, 1),
    "R50+ViT-L/32": _hybrid((3, 4, 6, 3), 1024, 4096, 16, 24, 1),
    # The name follows the public checkpoints (R_Ti_16); root (stride 4) x 8x8 patches = stride 32.
    "R+ViT-Ti/16": _hybrid((), 192, 768, 3, 12, 8),
    # For tests: a 16-channel root, two one-unit stages (stride 8), 8 groups, 32 px images (4x4 grid).
    "R+ViT-testing": _hybrid((1, 1), 32, 64, 2, 1, 1, resnet_width_factor=0.25, num_groups=8,
                             image_size=32),
}
