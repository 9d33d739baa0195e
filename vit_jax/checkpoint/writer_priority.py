"""On a CPU backend, an asynchronous checkpoint write takes only the cycles the train step leaves idle.

There the train step and the background write share the host's cores. At normal priority the write's
threads (TensorStore's pool, named 'ts_pool_worker') take cycles from the step. While a save is in
flight and the loop keeps stepping, they run under SCHED_IDLE: they get a core only when the step's
threads leave one idle. When the loop waits for the write (the next save, a restore, the end of
training), they get their normal priority back, so the write then finishes at full speed instead of
starving under other processes' load.

Linux only lets a process raise a thread's priority again with CAP_SYS_NICE (root has it) or an
RLIMIT_NICE of 20. Without either, a demoted write could stay starved. So writes then keep their
normal priority, as on accelerator backends, where the step does not run on the host's cores.
"""
import functools
import os
import resource

import jax

WRITER_THREAD = "ts_pool_worker"  # TensorStore's I/O and encoding pool; its threads persist.
_CAP_SYS_NICE = 23  # Bit of the capability in /proc/<pid>/status CapEff (linux/capability.h).
_NICE_RLIMIT_TO_RESTORE = 20  # RLIMIT_NICE allows nice >= 20 - rlimit; nice 0 needs 20.


def may_restore_priority(status_file: str = "/proc/self/status") -> bool:
  """Whether this process may move a thread from SCHED_IDLE back to normal scheduling."""
  if not hasattr(os, "SCHED_IDLE"):
    return False  # Not Linux.
  if resource.getrlimit(resource.RLIMIT_NICE)[0] >= _NICE_RLIMIT_TO_RESTORE:
    return True
  try:
    with open(status_file) as f:
      effective = next(line for line in f if line.startswith("CapEff:"))
  except (OSError, StopIteration):
    return False
  return bool(int(effective.split()[1], 16) >> _CAP_SYS_NICE & 1)


@functools.cache
def writes_yield_to_step() -> bool:
  """Whether this process demotes checkpoint writes while it trains: a CPU backend, and the right to
  restore their priority."""
  return jax.default_backend() == "cpu" and may_restore_priority()


def writer_threads() -> list[int]:
  """Thread ids of this process's checkpoint writer threads."""
  tids = []
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/comm") as f:
        if f.read().strip() == WRITER_THREAD:
          tids.append(int(tid))
    except (FileNotFoundError, ProcessLookupError):
      pass  # The thread ended while listing (the kernel answers either way).
  return tids


def _set_policy(policy: int) -> int:
  """Sets `policy` on every writer thread; returns how many were set."""
  count = 0
  for tid in writer_threads():
    try:
      os.sched_setscheduler(tid, policy, os.sched_param(0))
      count += 1
    except ProcessLookupError:
      pass  # The thread ended between listing and setting.
  return count


def yield_to_step() -> int:
  """Demotes the writer threads to SCHED_IDLE (where writes_yield_to_step); returns how many."""
  return _set_policy(os.SCHED_IDLE) if writes_yield_to_step() else 0


def full_speed() -> int:
  """Returns the writer threads to normal scheduling, including any a demoted thread started (those
  inherit SCHED_IDLE); returns how many. Call before waiting for a write."""
  return _set_policy(os.SCHED_OTHER) if writes_yield_to_step() else 0
