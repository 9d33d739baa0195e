"""writer_priority: on a CPU backend a checkpoint write runs at idle priority while training goes on,
and at normal priority once something waits for it; only where that priority can be given back."""
import os
import resource

import numpy as np

from vit_jax.checkpoint import Checkpointer, writer_priority

from .tiny import make_state


def status_file(tmp_path, cap_eff: int):
  path = tmp_path / "status"
  path.write_text(f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\n")
  return str(path)


def no_nice_rlimit(monkeypatch):
  monkeypatch.setattr(resource, "getrlimit", lambda which: (0, 0))


def test_cap_sys_nice_allows_restoring_priority(tmp_path, monkeypatch):
  no_nice_rlimit(monkeypatch)
  assert writer_priority.may_restore_priority(status_file(tmp_path, 1 << 23))
  assert writer_priority.may_restore_priority(status_file(tmp_path, 0x1ffffffffff))  # root's set


def test_without_cap_sys_nice_or_nice_rlimit_priority_cannot_be_restored(tmp_path, monkeypatch):
  no_nice_rlimit(monkeypatch)
  assert not writer_priority.may_restore_priority(status_file(tmp_path, 0x1ffffffffff ^ 1 << 23))
  assert not writer_priority.may_restore_priority(str(tmp_path / "missing"))


def test_a_nice_rlimit_of_20_allows_restoring_priority(tmp_path, monkeypatch):
  monkeypatch.setattr(resource, "getrlimit", lambda which: (20, 20))
  assert writer_priority.may_restore_priority(status_file(tmp_path, 0))


def writer_policies() -> set[int]:
  return {os.sched_getscheduler(tid) for tid in writer_priority.writer_threads()}


def test_a_save_in_flight_writes_at_idle_priority_until_waited_for(tmp_path):
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, make_state(1, seed=1), force=True)  # Starts TensorStore's writer threads.
    ckpt.wait_until_finished()
    assert writer_priority.writer_threads(), "TensorStore wrote without its pool threads"
    assert writer_policies() == {os.SCHED_OTHER}
    ckpt.save(2, make_state(2, seed=2), force=True)
    demoted = writer_policies()
    ckpt.wait_until_finished()
    assert writer_policies() == {os.SCHED_OTHER}
    on_host, _ = ckpt.restore(2)
  if writer_priority.writes_yield_to_step():  # A CPU backend, and the right to give priority back.
    assert demoted == {os.SCHED_IDLE}
  else:
    assert demoted == {os.SCHED_OTHER}
  np.testing.assert_array_equal(on_host["params"]["cls"], make_state(2, seed=2).params["cls"])
