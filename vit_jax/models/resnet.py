"""ResNets with GroupNorm and weight-standardised convolutions.

Two families share the building blocks here:
- BiT (Kolesnikov et al. 2020): the pre-activation ResNet-v2 `ResNetV2`, with the parameter names of the
  official bit_jax / big_vision code (root_block/conv_root, block1/unit01/{gn1,conv1,...}, norm-pre-head,
  head) and its numerics (GroupNorm eps 1e-5, weight standardisation sqrt(var + 1e-10), explicit symmetric
  padding, a zero-padded max-pool).
- The R50+ViT hybrid stem (Dosovitskiy et al. 2021): post-activation (ResNet v1.5) `BottleneckUnit`s in
  `Stage`s, named as in the public vit_jax checkpoints (block1/unit1/{conv1,gn1,...,conv_proj,gn_proj});
  the hybrid model itself is in hybrid.py.
Every epsilon is a module option, so parity tests can use timm's values while the defaults stay official.
"""
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.interface import ModelInterface
from vit_jax.models.layers import Dense, constrain, logical
from vit_jax.models.variant import Variant

Dtype = Any
Padding = Union[str, Sequence[tuple[int, int]]]

# How the kernel is divided after its mean is removed (per output channel, over H, W, I):
# 'sqrt_var': by sqrt(var + eps) (BiT, timm); 'std': by std + eps (the official R50+ViT hybrid).
WEIGHT_STD_FORMS = ("sqrt_var", "std")


def standardize_weight(kernel: jax.Array, epsilon: float, form: str) -> jax.Array:
  """Weight standardisation of an HWIO kernel per output channel, in float32."""
  kernel = kernel.astype(jnp.float32)
  centred = kernel - jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.mean(jnp.square(centred), axis=(0, 1, 2), keepdims=True)
  if form == "sqrt_var":
    return centred * jax.lax.rsqrt(var + epsilon)
  if form == "std":
    return centred / (jnp.sqrt(var) + epsilon)
  raise ValueError(f"weight_std_form must be one of {WEIGHT_STD_FORMS}, got {form!r}")


class StdConv(nn.Module):
  """A bias-free convolution whose kernel is weight-standardised on every call (no bias, NHWC/HWIO)."""
  features: int
  kernel_size: int
  strides: int = 1
  padding: Padding = "VALID"
  epsilon: float = 1e-10
  form: str = "sqrt_var"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
        "kernel",
        logical(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")),
        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    kernel = standardize_weight(kernel, self.epsilon, self.form).astype(self.dtype)
    padding = self.padding if isinstance(self.padding, str) else tuple(self.padding)
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel, (self.strides, self.strides), padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def group_norm(groups: int, epsilon: float, dtype: Dtype, name: str,
               zero_scale: bool = False) -> nn.GroupNorm:
  """GroupNorm with (C,) scale and bias tagged 'conv_out'; zero_scale starts a residual branch at 0.

  The variance is computed in two passes (as torch does), which stays accurate for post-ReLU
  activations whose mean is large against their spread.
  """
  scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
  return nn.GroupNorm(
      num_groups=groups, epsilon=epsilon, dtype=dtype, use_fast_variance=False, name=name,
      scale_init=logical(scale_init, ("conv_out",)),
      bias_init=logical(nn.initializers.zeros, ("conv_out",)))


def feature_map(x: jax.Array) -> jax.Array:
  """Names the axes of a (batch, height, width, channels) activation for the sharding rules."""
  return constrain(x, ("batch", None, None, "conv_out"))


class _ConvNormModule(nn.Module):
  """Base of the ResNet modules: the numerics options they share (GroupNorm groups and eps, weight
  standardisation eps and form) and helpers that build StdConv / GroupNorm layers with them."""
  num_groups: int = 32
  group_norm_epsilon: float = 1e-5
  weight_std_epsilon: float = 1e-10
  weight_std_form: str = "sqrt_var"
  dtype: Dtype = jnp.float32

  def conv(self, features: int, kernel_size: int, name: str, strides: int = 1,
           padding: Padding = "VALID") -> StdConv:
    return StdConv(features, kernel_size, strides, padding, self.weight_std_epsilon,
                   self.weight_std_form, self.dtype, name=name)

  def norm(self, name: str, zero_scale: bool = False) -> nn.GroupNorm:
    return group_norm(self.num_groups, self.group_norm_epsilon, self.dtype, name, zero_scale)

  def numerics(self) -> dict[str, Any]:
    return dict(num_groups=self.num_groups, group_norm_epsilon=self.group_norm_epsilon,
                weight_std_epsilon=self.weight_std_epsilon, weight_std_form=self.weight_std_form,
                dtype=self.dtype)


# ----------------------------------------------------------------------------------------------------
# BiT: pre-activation ResNet-v2.


class PreActBottleneck(_ConvNormModule):
  """BiT unit: x + conv3(relu(gn3(conv2(relu(gn2(conv1(relu(gn1(x))))))))), stride on the 3x3.

  The projection shortcut (when the width or resolution changes) reads the pre-activated input.
  """
  features: int = 64  # bottleneck width; the unit outputs 4 * features channels
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_features = 4 * self.features
    y = nn.relu(self.norm("gn1")(x))
    shortcut = x
    if x.shape[-1] != out_features or self.strides != 1:
      shortcut = self.conv(out_features, 1, "conv_proj", strides=self.strides)(y)
    y = self.conv(self.features, 1, "conv1")(y)
    y = nn.relu(self.norm("gn2")(y))
    y = self.conv(self.features, 3, "conv2", strides=self.strides, padding=((1, 1), (1, 1)))(y)
    y = nn.relu(self.norm("gn3")(y))
    y = self.conv(out_features, 1, "conv3")(y)
    return feature_map(y + shortcut)


class RootBlock(_ConvNormModule):
  """BiT root: symmetric pad 3, 7x7/2 StdConv, zero pad 1, 3x3/2 max-pool (no norm, no activation).

  Zero padding before the pool (as the official code does) differs from -inf padding: it clips
  negative border maxima to 0.
  """
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.width, 7, "conv_root", strides=2, padding=((3, 3), (3, 3)))(x)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # window_shape by keyword: the ONNX converter (jax2onnx) replaces max_pool with one that
    # takes it only so (vit_jax/export/onnx_model.py).
    return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")


class ResNetV2(nn.Module):
  """BiT ResNet-v2: root, pre-activation bottleneck stages, GroupNorm -> ReLU -> global average -> dense.

  Apply as `model.apply({'params': params}, images_nhwc, train=False)`; fully convolutional, so any
  image size works (image_size is the size it is built and converted for). num_classes=0 or None
  returns the pooled features. The ResNet options have the names of the hybrid's (hybrid.py).
  """
  num_classes: Optional[int]
  image_size: int
  resnet_layers: tuple[int, ...] = (3, 4, 6, 3)  # units per stage
  resnet_width_factor: float = 1.0  # stage i has bottlenecks of 64 * resnet_width_factor * 2**i channels
  resnet_root_width: Optional[int] = None  # channels of the root conv (timm stem_chs); None: 64 * factor
  num_groups: int = 32
  group_norm_epsilon: float = 1e-5
  weight_std_epsilon: float = 1e-10
  dtype: Dtype = jnp.float32

  @property
  def interface(self) -> ModelInterface:
    return ModelInterface(pooling="gap", class_token=False, position_embedding="none",
                          representation_layer=False, dense_outputs=False)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # BiT has no dropout and no batch statistics.
    if images.ndim != 4:
      raise ValueError(f"expected images of shape (batch, height, width, channels), got {images.shape}")
    norms = dict(num_groups=self.num_groups, group_norm_epsilon=self.group_norm_epsilon,
                 weight_std_epsilon=self.weight_std_epsilon, weight_std_form="sqrt_var",
                 dtype=self.dtype)
    width = int(64 * self.resnet_width_factor)
    x = RootBlock(width=self.resnet_root_width or width, name="root_block", **norms)(
        images.astype(self.dtype))
    self.sow("intermediates", "stem_output", x)
    for i, num_units in enumerate(self.resnet_layers):
      x = Stage(unit=PreActBottleneck, num_units=num_units, features=width * 2 ** i,
                first_stride=1 if i == 0 else 2, name=f"block{i + 1}", **norms)(x)
    x = nn.relu(group_norm(self.num_groups, self.group_norm_epsilon, self.dtype, "norm-pre-head")(x))
    self.sow("intermediates", "encoded", x)
    x = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "head_input", x)
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = Dense(
        self.num_classes, dtype=self.dtype, name="head",
        kernel_init=logical(nn.initializers.zeros, ("conv_in", "classes")),
        bias_init=logical(nn.initializers.zeros, ("classes",)))(x)
    return x.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------
# The hybrid's stem: post-activation (ResNet v1.5) bottlenecks with 'SAME' padding.


class BottleneckUnit(_ConvNormModule):
  """Hybrid unit: relu(proj(x) + gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x))))))))), stride on the 3x3.

  gn3 starts with a zero scale, so each unit starts as (a projection of) the identity.
  """
  features: int = 64  # bottleneck width; the unit outputs 4 * features channels
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_features = 4 * self.features
    residual = x
    if x.shape[-1] != out_features or self.strides != 1:
      residual = self.conv(out_features, 1, "conv_proj", strides=self.strides, padding="SAME")(x)
      residual = self.norm("gn_proj")(residual)
    y = nn.relu(self.norm("gn1")(self.conv(self.features, 1, "conv1", padding="SAME")(x)))
    y = self.conv(self.features, 3, "conv2", strides=self.strides, padding="SAME")(y)
    y = nn.relu(self.norm("gn2")(y))
    y = self.conv(out_features, 1, "conv3", padding="SAME")(y)
    y = self.norm("gn3", zero_scale=True)(y)
    return feature_map(nn.relu(residual + y))


class Stage(_ConvNormModule):
  """A stage of bottleneck units of one width (the first one may stride), named by `unit_name`:
  BiT's PreActBottleneck as unit01, unit02, ...; the hybrid's BottleneckUnit as unit1, unit2, ..."""
  unit: Any = None
  unit_name: str = "unit{:02d}"
  num_units: int = 1
  features: int = 64
  first_stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_units):
      x = self.unit(features=self.features, strides=self.first_stride if i == 0 else 1,
                    name=self.unit_name.format(i + 1), **self.numerics())(x)
    return x


def _bit(resnet_layers, resnet_width_factor, **extra):
  return Variant(ResNetV2, dict(resnet_layers=resnet_layers, resnet_width_factor=resnet_width_factor,
                                **extra))


# BiT (Kolesnikov et al. 2020, the official bit_jax KNOWN_MODELS); counts in
# docs/architectures.md#bit-variants.
VARIANTS: dict[str, Variant] = {
    "BiT-R50x1": _bit((3, 4, 6, 3), 1),
    "BiT-R50x3": _bit((3, 4, 6, 3), 3),
    "BiT-R101x1": _bit((3, 4, 23, 3), 1),
    "BiT-R101x3": _bit((3, 4, 23, 3), 3),
    "BiT-R152x2": _bit((3, 8, 36, 3), 2),
    "BiT-R152x4": _bit((3, 8, 36, 3), 4),
    # A few thousand parameters for tests: two stages, 16-channel root, 8 groups, 32 px images.
    "BiT-testing": _bit((2, 1), 0.25, num_groups=8, image_size=32),
}
