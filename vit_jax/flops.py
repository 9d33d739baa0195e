"""FLOPs per training step (from the architecture) and device peaks, for the MFU in the training logs.

Convention: a multiply-accumulate is 2 FLOPs; matmuls and convolutions only (as the papers count);
a training step costs 3x the forward pass (backward = 2x forward).
"""
import functools
import math
import time
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.vit import VisionTransformer

# Dense peak FLOP/s per chip, by device_kind substring, for bf16 and f32 matmuls (vendor figures).
PEAK_FLOPS = {
    "TPU v6": {"bfloat16": 918e12, "float32": 918e12 / 4},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 4},
    "TPU v5": {"bfloat16": 197e12, "float32": 197e12 / 4},   # v5e ("TPU v5 lite")
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 4},
    "TPU v3": {"bfloat16": 123e12, "float32": 123e12 / 4},
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30e12},
}


def vit_forward_macs(model: VisionTransformer) -> int:
  """Multiply-accumulates of one ViT forward pass (patch embedding, blocks, pre-logits, head)."""
  d, m, depth = model.hidden_size, model.mlp_dim, model.num_layers
  patches = (model.image_size // model.patch_size) ** 2
  tokens = patches + (1 if model.classifier == "token" else 0)
  macs = patches * model.patch_size ** 2 * 3 * d
  macs += depth * (tokens * (4 * d * d + 2 * d * m) + 2 * tokens * tokens * d)
  width = d
  if model.representation_size:
    macs += d * model.representation_size
    width = model.representation_size
  return macs + width * (model.num_classes or 0)


def _xla_forward_flops(model: nn.Module) -> float:
  """FLOPs of one example's forward pass as XLA counts them (for families without a formula)."""
  shape = (1, model.image_size, model.image_size, 3)
  variables = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), jnp.zeros(shape))))
  lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(
      variables, jax.ShapeDtypeStruct(shape, jnp.float32))
  return float(lowered.cost_analysis()["flops"])


def forward_flops_per_example(model: nn.Module) -> float:
  """Analytic for ViT (the exact formula in docs/architectures.md#vit-variants); XLA's count otherwise."""
  if type(model) is VisionTransformer:  # pylint: disable=unidiomatic-typecheck  (subclasses differ)
    return 2.0 * vit_forward_macs(model)
  return _xla_forward_flops(model)


def train_flops_per_example(model: nn.Module) -> float:
  return 3.0 * forward_flops_per_example(model)


@functools.lru_cache(maxsize=None)
def measured_matmul_peak(dtype_name: str = "float32", size: int = 2048) -> float:
  """The device's matmul FLOP/s measured now (used where no vendor figure applies, e.g. CPUs)."""
  dtype = jnp.dtype(dtype_name)
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  matmul(a, a).block_until_ready()
  best = math.inf
  for _ in range(10):  # the best of 10: on a shared host a neighbour's burst can slow a few calls
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def peak_flops_per_device(dtype_name: str = "float32", device: Optional[jax.Device] = None) -> float:
  """Peak FLOP/s of one device for the compute dtype: the vendor table, or measured on CPUs."""
  device = device or jax.devices()[0]
  for kind, peaks in PEAK_FLOPS.items():
    if kind in device.device_kind:
      return peaks.get(dtype_name, peaks["float32"])
  return measured_matmul_peak(dtype_name)
