"""Keeps freed host memory mapped, so XLA:CPU does not page its step buffers in again every step.

XLA:CPU allocates a step's temporaries as one large block with malloc on a worker thread and frees
it when the step ends. glibc serves a block that size from mmap in the worker thread's own arena
and gives it back with munmap, so every step faults all its pages in afresh and has the kernel
zero them, in system time. `keep_freed_pages` tells glibc to use one arena, never to hand blocks to
mmap and never to trim the heap, so the next step reuses the same pages. Alone that costs memory:
while other threads (tf.data) allocate, their buffers split a freed block, so the heap grows by
another block every few steps (ViT-Ti/16 at batch 32 on JPEGs: 6.6-10 GB resident after 13 steps
instead of 3.3). So by default a daemon thread bounds it: every POLL_SECONDS it reads the resident
size, and when that has grown by GROWTH_FRACTION (a quarter; at least MIN_GROWTH) since the last
trim it calls malloc_trim(0): glibc then hands the free pages inside the heap back to the kernel.
A trim almost always lands while a step runs, when its block is in use and stays resident; what
goes back is the split-off remnants. So the resident size stays within a quarter of its size after
a trim, and a process that does not grow is never trimmed. (Trimming on a clock instead, every 10
s, let the peak double between trims when steps are short.) Step times and peak resident sizes per
setting:
experiments/README.md, sections "Page faults, transposed copies and bf16 bias gradients" and
"Bounded host memory" (experiments/bench_host_memory.py).

It must run before any thread starts (a thread that already has an arena keeps it), so entry points
call it first thing, before importing jax. It does nothing where an accelerator plugin is installed
(there the step's buffers are on the device, and one arena would only make tf.data's threads
contend), off Linux/glibc, or with VIT_JAX_KEEP_FREED_PAGES=0; =unbounded keeps the pages without
trimming (the fastest, and memory grows as above).
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import sys
import threading
import time
from typing import NamedTuple

SETTING_ENV = "VIT_JAX_KEEP_FREED_PAGES"
DISABLE_ENV = SETTING_ENV  # =0 turns it off
POLL_SECONDS = 0.5
GROWTH_FRACTION = 0.25  # Trim once resident memory exceeds its size after the last trim by this ...
MIN_GROWTH = 256 * 2 ** 20  # ... or by this many bytes, whichever is more.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
_NEVER = -1  # M_TRIM_THRESHOLD -1: never trim (mallopt(3))
_KEEP = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER))


class Plan(NamedTuple):
  """What a setting of VIT_JAX_KEEP_FREED_PAGES does: mallopt calls, then whether a daemon thread
  bounds the heap (GrowthTrimmer)."""
  mallopt: tuple[tuple[int, int], ...]
  bounded: bool


PLANS = {"0": Plan((), False), "1": Plan(_KEEP, True), "unbounded": Plan(_KEEP, False)}


class Outcome(NamedTuple):
  applied: bool
  reason: str


def plan(setting: str) -> Plan:
  """The plan of a VIT_JAX_KEEP_FREED_PAGES value (unset: "1")."""
  if setting not in PLANS:
    raise ValueError(f"{SETTING_ENV}={setting!r}: expected one of {', '.join(PLANS)}")
  return PLANS[setting]


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


def _libc():
  """glibc and its version, or (None, None) when the C library is another."""
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc, libc.gnu_get_libc_version().decode()
  except (OSError, AttributeError):
    return None, None


def resident_bytes() -> int:
  """This process's resident size (/proc/self/statm)."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class GrowthTrimmer:
  """Calls trim() when resident() has grown by GROWTH since the size after the last trim (or the
  lowest size seen since)."""

  def __init__(self, trim, resident=resident_bytes):
    self._trim, self._resident = trim, resident
    self.floor = resident()
    self.trims = 0

  def limit(self) -> int:
    """The resident size above which the next check trims."""
    return self.floor + max(MIN_GROWTH, int(GROWTH_FRACTION * self.floor))

  def check(self) -> bool:
    """One poll: trims if the process has grown past limit(); returns whether it trimmed."""
    now = self._resident()
    if now <= self.limit():
      self.floor = min(self.floor, now)
      return False
    self._trim()
    self.trims += 1
    self.floor = self._resident()
    return True


def _start_trimming(libc) -> None:
  trimmer = GrowthTrimmer(lambda: libc.malloc_trim(0))

  def trim_when_grown():
    while True:
      time.sleep(POLL_SECONDS)
      trimmer.check()
  threading.Thread(target=trim_when_grown, name="malloc_trim", daemon=True).start()


def keep_freed_pages() -> Outcome:
  """Makes glibc keep freed memory for reuse (see the module docstring); says whether it did."""
  setting = os.environ.get(SETTING_ENV, "1")
  chosen = plan(setting)
  if not chosen.mallopt:
    return Outcome(False, f"{SETTING_ENV}={setting}")
  if not sys.platform.startswith("linux"):
    return Outcome(False, f"not Linux ({sys.platform})")
  libc, version = _libc()
  if libc is None:
    return Outcome(False, "the C library is not glibc")
  if _accelerator_expected():
    return Outcome(False, "an accelerator is expected (JAX_PLATFORMS or an installed plugin)")
  threads = _threads()
  if threads != 1:
    return Outcome(False, f"{threads} threads already run (call it before importing jax)")
  for parameter, value in chosen.mallopt:
    if libc.mallopt(parameter, value) != 1:
      return Outcome(False, f"glibc {version} refused mallopt({parameter}, {value})")
  if chosen.bounded:
    _start_trimming(libc)
    return Outcome(True, f"glibc {version}: one arena, no mmap blocks, trimmed when resident "
                         f"memory grows by {GROWTH_FRACTION:.0%} (at least "
                         f"{MIN_GROWTH // 2 ** 20} MiB)")
  return Outcome(True, f"glibc {version}: one arena, no mmap blocks, no trimming")
