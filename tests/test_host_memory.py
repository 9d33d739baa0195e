"""Specification of keep_freed_pages: XLA:CPU's per-step buffers are reused instead of being paged in
again every step, and it stays off where it would not help or could not take effect. The project runs
on Linux with glibc (as its CI does), so every test here applies."""
import json
import os
import sys

import numpy as np
import pytest

from vit_jax import host_memory

from . import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMP_PAGES = 4096 * 8192 * 4 // 4096  # the 128 MiB temporary of the step below, in 4 KiB pages

# A "step" whose compiled temporary (the cumsum, 128 MiB) is one block XLA:CPU allocates and frees on
# every call; prints the minor page faults of each of 20 calls.
STEP_SCRIPT = """
import json, resource
from vit_jax import host_memory
kept = host_memory.keep_freed_pages()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 8192), jnp.float32)
step = jax.jit(lambda x: jnp.sin(jnp.cumsum(x, axis=1)).sum(axis=0))
faults = []
for _ in range(20):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": kept.applied, "reason": kept.reason, "faults": faults}))
"""


def _run_steps(**env):
  """The step script in a child compiled as in production: without the tests' FAST_COMPILE, under
  which the step's memory is used differently (its faults are not a real step's) and its 20 steps
  take over a minute."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=processes.xla_flags(8, fast_compile=False), **env)
  done = processes.run([sys.executable, "-c", STEP_SCRIPT], cwd=ROOT, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_kept_pages_serve_the_next_steps_without_page_faults():
  run = _run_steps()
  assert run["applied"], run["reason"]
  assert np.median(run["faults"][-10:]) < 0.01 * TEMP_PAGES, run["faults"]


def test_without_it_every_step_pages_its_temporary_in_again():
  run = _run_steps(**{host_memory.DISABLE_ENV: "0"})
  assert not run["applied"] and host_memory.DISABLE_ENV in run["reason"]
  assert np.median(run["faults"][-10:]) > 0.9 * TEMP_PAGES, run["faults"]


def test_it_refuses_once_other_threads_run():
  kept = host_memory.keep_freed_pages()  # this process has imported jax: its threads have arenas
  assert not kept.applied and "threads already run" in kept.reason


@pytest.mark.parametrize("platforms", ["cuda", "tpu,cpu"])
def test_it_stays_off_when_jax_will_use_an_accelerator(monkeypatch, platforms):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.setattr(host_memory, "_threads", lambda: 1)  # as if called first thing
  kept = host_memory.keep_freed_pages()
  assert not kept.applied and "accelerator" in kept.reason


def test_the_environment_switch_turns_it_off(monkeypatch):
  monkeypatch.setenv(host_memory.DISABLE_ENV, "0")
  assert host_memory.keep_freed_pages() == host_memory.Outcome(False, f"{host_memory.DISABLE_ENV}=0")


class FakeLibc:
  """Records mallopt calls instead of making them."""

  def __init__(self):
    self.calls = []

  def mallopt(self, parameter, value):
    self.calls.append((parameter, value))
    return 1


def _apply_with_fake_libc(monkeypatch, setting):
  """keep_freed_pages as called first thing on a CPU host; returns (outcome, mallopt calls, the
  trimming threads it would start)."""
  libc, trims = FakeLibc(), []
  if setting is None:
    monkeypatch.delenv(host_memory.SETTING_ENV, raising=False)
  else:
    monkeypatch.setenv(host_memory.SETTING_ENV, setting)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setattr(host_memory, "_threads", lambda: 1)
  monkeypatch.setattr(host_memory, "_libc", lambda: (libc, "2.36"))
  monkeypatch.setattr(host_memory, "_start_trimming", lambda _: trims.append("bounded"))
  return host_memory.keep_freed_pages(), libc.calls, trims


ONE_ARENA_NO_MMAP_NO_TRIM = [(-8, 1), (-4, 0), (-1, -1)]  # M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD


@pytest.mark.parametrize("setting", [None, "1"])
def test_by_default_pages_are_kept_and_the_heap_is_trimmed_when_it_grows(monkeypatch, setting):
  kept, calls, trims = _apply_with_fake_libc(monkeypatch, setting)
  assert kept.applied and "trimmed when resident memory grows by 25%" in kept.reason
  assert calls == ONE_ARENA_NO_MMAP_NO_TRIM
  assert trims == ["bounded"]


GIB = 2 ** 30


def test_the_trimmer_trims_only_when_resident_memory_has_grown_by_a_quarter():
  """Resident sizes as a run goes: it settles at 4 GiB, kept remnants add 0.5 GiB a step, a trim
  gives them back; 1 GiB above the settled size is the limit."""
  sizes = iter([4 * GIB,                   # when the thread starts
                4.5 * GIB, 5 * GIB,        # within 4 + 1 GiB: kept
                5.5 * GIB, 4.1 * GIB,      # over: trimmed, back to 4.1 GiB
                5 * GIB, 3 * GIB,          # within 4.1 + 1.025 GiB; then lower: the new floor
                3.5 * GIB])                # within 3 + 0.75 GiB
  trims = []
  trimmer = host_memory.GrowthTrimmer(lambda: trims.append(1), resident=lambda: int(next(sizes)))
  assert [trimmer.check() for _ in range(5)] == [False, False, True, False, False]
  assert trimmer.floor == 3 * GIB and trimmer.limit() == 3.75 * GIB and trimmer.trims == 1
  assert not trimmer.check() and len(trims) == 1


def test_a_small_process_may_grow_by_the_minimum_before_a_trim():
  trimmer = host_memory.GrowthTrimmer(lambda: None, resident=lambda: 100 * 2 ** 20)
  assert trimmer.limit() == 100 * 2 ** 20 + host_memory.MIN_GROWTH


def test_unbounded_keeps_pages_without_trimming(monkeypatch):
  kept, calls, trims = _apply_with_fake_libc(monkeypatch, "unbounded")
  assert kept.applied and "no trimming" in kept.reason
  assert calls == ONE_ARENA_NO_MMAP_NO_TRIM and trims == []


def test_off_makes_no_calls(monkeypatch):
  kept, calls, trims = _apply_with_fake_libc(monkeypatch, "0")
  assert not kept.applied and calls == [] and trims == []


def test_an_unknown_setting_is_refused_in_one_line(monkeypatch):
  with pytest.raises(ValueError, match=r"VIT_JAX_KEEP_FREED_PAGES='yes': expected one of 0, 1, unbounded"):
    _apply_with_fake_libc(monkeypatch, "yes")


# Real glibc, kept pages, and the trimmer's check called at chosen points (no thread: with the
# setting 'unbounded', keep_freed_pages starts none). A 384 MiB block is written, freed, and its
# pages stay (kept); the check sees the growth and trims them back. A block still in use is not
# freed by a trim, and once freed without further growth it stays for reuse: writing it again
# costs no page faults.
TRIM_SCRIPT = """
import ctypes, json, resource
from vit_jax import host_memory
assert host_memory.keep_freed_pages().applied
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 384 * 2 ** 20
mib = lambda: host_memory.resident_bytes() // 2 ** 20
trimmer = host_memory.GrowthTrimmer(lambda: libc.malloc_trim(0))
out = {"start": mib()}

def write_block():
  block = libc.malloc(SIZE)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(block, 1, SIZE)
  return block, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

block, _ = write_block()
libc.free(block)
out["freed, kept"] = mib()
out["trimmed"] = trimmer.check()
out["after the trim"] = mib()
block, _ = write_block()
out["in use: trimmed"] = trimmer.check()
out["in use"] = mib()
libc.free(block)
out["freed again: trimmed"] = trimmer.check()
_, out["faults writing it again"] = write_block()
print(json.dumps(out))
"""


def test_a_trim_gives_back_freed_pages_and_keeps_what_is_in_use():
  env = dict(os.environ, JAX_PLATFORMS="cpu", **{host_memory.SETTING_ENV: "unbounded"})
  done = processes.run([sys.executable, "-c", TRIM_SCRIPT], cwd=ROOT, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert out["freed, kept"] > out["start"] + 300, out  # kept pages stay resident
  assert out["trimmed"] and out["after the trim"] < out["start"] + 64, out
  assert out["in use: trimmed"] and out["in use"] > out["start"] + 300, out
  assert not out["freed again: trimmed"], out
  assert out["faults writing it again"] < 0.01 * (384 * 2 ** 20 // 4096), out
