"""Which attention path a layer runs: attention_impl='auto' picks the fastest one the backend has.

Resolved at trace time, where the backend is known, so one config trains fast on a GPU, a CPU host or a
TPU. A path that cannot run (the CPU kernel cannot be built, attention dropout is on) falls back to XLA
and says why once per process, not once per layer or trace.
"""
import functools
from typing import Optional

from absl import logging

# auto: picked per backend (resolve) | xla: einsum + softmax | fused: jax.nn.dot_product_attention
# (cuDNN on GPU) | cpu: our C++ kernel (vit_jax/kernels/cpu_attention.py) | pallas: JAX's Pallas flash
# attention kernel for TPU (vit_jax/kernels/tpu_flash_attention.py).
IMPLS = ("auto", "xla", "fused", "cpu", "pallas")

# On TPU 'auto' takes the Pallas kernel from this many tokens on. The kernel saves the HBM round trip
# of the (tokens x tokens) weights, which grows with tokens squared, but pads tokens to its 128-token
# blocks: ViT-B/16 at 224 px (197 -> 256) would compute 69% more attention, at 384 px (577 -> 640)
# 23% more, while ViT-H/14 at 518 px (1370 -> 1408) computes 6% more on weights of 7.5 MB per head and
# image in float32. Not measured here (no TPU): a judgement, revisit with a TPU benchmark.
PALLAS_MIN_TOKENS = 1024


def resolve(impl: str, backend: str, tokens: int, dropout_active: bool) -> str:
  """The path that runs for attention_impl `impl` on JAX backend `backend` ('cpu', 'gpu', 'tpu', ...),
  before the CPU kernel's build is tried: none of the kernels applies dropout to the weights, so
  active attention dropout always means 'xla'."""
  if impl not in IMPLS:
    raise ValueError(f"attention_impl must be one of {IMPLS}, got {impl!r}")
  if dropout_active:
    return "xla"
  if impl != "auto":
    return impl
  if backend == "gpu":
    return "fused"
  if backend == "cpu":
    return "cpu"
  if backend == "tpu" and tokens >= PALLAS_MIN_TOKENS:
    return "pallas"
  return "xla"


@functools.cache
def cpu_kernel_problem() -> Optional[str]:
  """None when the C++ kernel is built (or cached) and registered; else why not. Tried once per
  process: a failed build is not retried by every layer."""
  from vit_jax.kernels import cpu_attention  # pylint: disable=import-outside-toplevel
  try:
    cpu_attention.register()
  except (cpu_attention.KernelBuildError, OSError) as error:
    return str(error)
  return None


@functools.cache
def warn_once(message: str) -> None:
  logging.warning("%s", message)


def choose(impl: str, backend: str, tokens: int, dropout_active: bool) -> str:
  """resolve(), then the fallbacks that need the machine: 'auto' on a CPU host whose kernel cannot
  be built runs 'xla'. Each fallback is logged once, with its reason."""
  chosen = resolve(impl, backend, tokens, dropout_active)
  if dropout_active and resolve(impl, backend, tokens, False) != "xla":
    warn_once(f"attention_impl={impl!r} runs the XLA attention path where attention dropout is "
              "active (training with attention_dropout_rate > 0): the kernels do not apply it.")
  if impl == "auto" and chosen == "cpu":
    problem = cpu_kernel_problem()
    if problem is not None:
      warn_once(f"attention_impl='auto' runs the XLA attention path: the CPU attention kernel "
                f"cannot be used ({problem})")
      return "xla"
  return chosen
