"""Keeps freed host memory mapped, so XLA:CPU does not page its step buffers in again every step.

XLA:CPU allocates a step's temporaries as one large block with malloc on a worker thread and frees
it when the step ends. glibc serves a block that size from mmap in the worker thread's own arena
and gives it back with munmap, so every step faults all its pages in afresh and has the kernel
zero them, in system time. `keep_freed_pages` tells glibc to use one arena, never to hand blocks to
mmap and never to trim the heap, so the next step reuses the same pages. The cost is memory: the
process keeps its high-water mark, and while other threads (tf.data) allocate, their buffers can
split a freed block so that the heap grows by another block or two before it settles. Measured
fault counts, step times and resident sizes: experiments/README.md, section "Page faults,
transposed copies and bf16 bias gradients".

It must run before any thread starts (a thread that already has an arena keeps it), so entry points
call it first thing, before importing jax. It does nothing where an accelerator plugin is installed
(there the step's buffers are on the device, and one arena would only make tf.data's threads
contend), off Linux/glibc, or with VIT_JAX_KEEP_FREED_PAGES=0.
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import sys
from typing import NamedTuple

DISABLE_ENV = "VIT_JAX_KEEP_FREED_PAGES"
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
_NEVER = -1  # M_TRIM_THRESHOLD -1: never trim (mallopt(3))


class Outcome(NamedTuple):
  applied: bool
  reason: str


def _accelerator_expected() -> bool:
  """True when JAX will pick a GPU or TPU: JAX_PLATFORMS names one first, or (unset) a plugin is
  installed."""
  platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return platforms[0] != "cpu"
  return bool(importlib.metadata.entry_points(group="jax_plugins")
              or importlib.util.find_spec("jax_plugins") is not None
              or importlib.util.find_spec("libtpu") is not None)


def _threads() -> int:
  return len(os.listdir("/proc/self/task"))


def keep_freed_pages() -> Outcome:
  """Makes glibc keep freed memory for reuse (see the module docstring); says whether it did."""
  if os.environ.get(DISABLE_ENV, "1") == "0":
    return Outcome(False, f"{DISABLE_ENV}=0")
  if not sys.platform.startswith("linux"):
    return Outcome(False, f"not Linux ({sys.platform})")
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    version = libc.gnu_get_libc_version().decode()
  except (OSError, AttributeError):
    return Outcome(False, "the C library is not glibc")
  if _accelerator_expected():
    return Outcome(False, "an accelerator is expected (JAX_PLATFORMS or an installed plugin)")
  threads = _threads()
  if threads != 1:
    return Outcome(False, f"{threads} threads already run (call it before importing jax)")
  for parameter, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER)):
    if libc.mallopt(parameter, value) != 1:
      return Outcome(False, f"glibc {version} refused mallopt({parameter}, {value})")
  return Outcome(True, f"glibc {version}: one arena, no mmap blocks, no trimming")
