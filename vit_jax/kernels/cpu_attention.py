"""softmax(scale q k^T) v on XLA:CPU through a C++ kernel that spreads the (batch, head) pairs over cores.

Why: XLA:CPU runs attention's batched matmuls on one core, so on a CPU the attention core of a ViT
train step is slower than PyTorch's scaled_dot_product_attention (figures: experiments/README.md,
sections "Attention layout" and "A C++ attention kernel for XLA:CPU").
The kernel (cpu_attention.cc) is compiled on first use with the machine's C++ compiler against
jaxlib's XLA FFI headers and the Eigen headers that tensorflow ships, and cached by content; it is
registered as an XLA FFI target and wrapped in a custom VJP. Under a mesh it runs per shard.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.kernels.per_shard import per_shard

SOURCE = Path(__file__).with_name("cpu_attention.cc")
FORWARD_TARGET = "vit_jax_cpu_attention_forward"
BACKWARD_TARGET = "vit_jax_cpu_attention_backward"
COMPILER_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")


class KernelBuildError(RuntimeError):
  """The C++ attention kernel could not be compiled on this machine."""


def _include_dirs() -> list[str]:
  """jaxlib's FFI headers first: tensorflow's include tree carries its own, older, xla/ffi copy."""
  try:
    import tensorflow as tf  # noqa: F401  (only for the location of its Eigen headers)
  except ImportError as error:
    raise KernelBuildError(
        "the CPU attention kernel needs the Eigen headers that the tensorflow package ships; "
        "install the pinned tensorflow-cpu or use attention_impl='xla'") from error
  eigen = Path(tf.sysconfig.get_include())
  return [jax.ffi.include_dir(), str(eigen)]


def _cpu_signature() -> str:
  """-march=native code must not run on another CPU: the cache key includes the CPU's features."""
  try:
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith(("flags", "Features")))
  except (OSError, StopIteration):
    flags = ""
  return f"{platform.machine()} {flags}"


def cache_dir() -> Path:
  """Where compiled kernels live: $VIT_JAX_KERNEL_CACHE, else ~/.cache/vit_jax/kernels."""
  default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vit_jax" / "kernels"
  return Path(os.environ.get("VIT_JAX_KERNEL_CACHE", default))


def library_path(compiler: str) -> Path:
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(COMPILER_FLAGS).encode(),
               jax.__version__.encode(), _cpu_signature().encode()):
    key.update(part)
  return cache_dir() / f"cpu_attention-{key.hexdigest()[:16]}.so"


def build() -> Path:
  """Compiles the kernel unless the cache has it; concurrent builders each write a temporary file
  and rename it into place, so a reader never sees a partial library."""
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if not compiler:
    raise KernelBuildError("no C++ compiler found (set CXX, or use attention_impl='xla')")
  target = library_path(compiler)
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  includes = [flag for path in _include_dirs() for flag in ("-I", path)]
  with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
    partial = Path(scratch) / target.name
    command = [compiler, *COMPILER_FLAGS, *includes, str(SOURCE), "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
      raise KernelBuildError(
          f"compiling {SOURCE.name} failed ({' '.join(command)}):\n{result.stderr[-4000:]}")
    os.replace(partial, target)
  return target


@functools.cache
def register() -> None:
  """Builds (or finds) the kernel and registers its two FFI targets for the CPU platform, once."""
  library = ctypes.CDLL(str(build()))
  jax.ffi.register_ffi_target(
      FORWARD_TARGET, jax.ffi.pycapsule(library.VitJaxAttentionForward), platform="cpu")
  jax.ffi.register_ffi_target(
      BACKWARD_TARGET, jax.ffi.pycapsule(library.VitJaxAttentionBackward), platform="cpu")


def _forward(q, k, v, scale):
  batch, tokens, heads, _ = q.shape
  return jax.ffi.ffi_call(
      FORWARD_TARGET,
      (jax.ShapeDtypeStruct(q.shape, q.dtype),
       jax.ShapeDtypeStruct((batch, heads, tokens, tokens), jnp.float32)),
      vmap_method="sequential")(q, k, v, scale=np.float32(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q, k, v, scale):
  return _forward(q, k, v, scale)[0]


def _attention_forward(q, k, v, scale):
  out, probs = _forward(q, k, v, scale)
  return out, (q, k, v, probs)


def _attention_backward(scale, residuals, dout):
  q, k, v, probs = residuals
  shapes = tuple(jax.ShapeDtypeStruct(t.shape, t.dtype) for t in (q, k, v))
  return jax.ffi.ffi_call(BACKWARD_TARGET, shapes, vmap_method="sequential")(
      q, k, v, probs, dout.astype(q.dtype), scale=np.float32(scale))


_attention.defvjp(_attention_forward, _attention_backward)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: Optional[float] = None) -> jax.Array:
  """softmax(scale q k^T) v over token-major (batch, tokens, heads, head_dim) operands; the scale
  defaults to head_dim**-0.5.

  float32 or bfloat16 (arithmetic in float32); the weights stay float32 for the backward pass.
  Under an active mesh the kernel runs per shard of the batch and heads axes.
  """
  if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
    raise ValueError(f"cpu attention takes q, k, v of one (batch, tokens, heads, head_dim) shape, "
                     f"got {q.shape}, {k.shape}, {v.shape}")
  if q.dtype not in (jnp.float32, jnp.bfloat16) or not q.dtype == k.dtype == v.dtype:
    raise ValueError(f"cpu attention takes float32 or bfloat16 operands of one dtype, got "
                     f"{q.dtype}, {k.dtype}, {v.dtype}")
  if jax.default_backend() != "cpu":
    raise ValueError(f"attention_impl='cpu' runs on XLA:CPU only, but JAX's backend is "
                     f"{jax.default_backend()!r}; use attention_impl='fused' there")
  scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
  register()
  return per_shard(functools.partial(_attention, scale=scale), q, k, v)
