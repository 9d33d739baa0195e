"""Specification of multi-host training: N processes reach the one-process result, checkpoints move
between process counts, and when one process fails or dies the others stop, clearly and in time.

Jobs run `python -m vit_jax.main` as real processes joined on 127.0.0.1, with the default digits
config shrunk to a few steps and data.global_order on. Tests wait on the processes' progress
(tests/processes.py), so a loaded machine makes them slower, not failed.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import sys
import threading
import time

import jax
import numpy as np
import pytest

from vit_jax import multihost
from vit_jax.checkpoint import restore_params

from . import processes

# Its module-scoped jobs run once: pytest-xdist keeps this file on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_multihost")

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAILING_MAIN = str(ROOT / "tests" / "failing_main.py")
TIMEOUT = 15     # --distributed_timeout of the jobs that are stopped, in seconds.
QUIET_TIMEOUT = 300  # --distributed_timeout of the others: they would only fail with a slow start.
SLACK = 20       # How much later than TIMEOUT a survivor may stop, at least (see `stopped`).
SMALL = ("--config=configs/default.py:pretrain", "--config.model_name=ViT-micro/4",
         "--config.train.epochs=0", "--config.optim.warmup_steps=1", "--config.batch_size=32",
         "--config.eval_batch_size=360", "--config.train.log_every=1",
         "--config.train.checkpoint_every=2", "--config.data.global_order=True")


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start(workdir, count, port, *, cache=None, steps=4, by_env=False,
           program=("-m", "vit_jax.main"), flags=(), timeout=QUIET_TIMEOUT):
  """Starts a job of `count` processes with 8 // count CPU devices each, joined by flags (or by
  JAX_* environment variables) with --distributed_timeout=`timeout`, sharing the compilation
  `cache` directory if given; returns the processes, whose output goes to <workdir>.<i>.log.

  Only jobs that compile programs no other running job compiles may share a cache: were another
  job to add a program while this one starts, one of its processes could load it while its peer
  compiles it, and JAX's CPU collectives wait only 30 s for a peer to reach the first of them."""
  workdir = pathlib.Path(workdir)
  base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("JAX_")}
  base.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
              XLA_FLAGS=processes.xla_flags(8 // count))
  if cache:
    base.update(JAX_COMPILATION_CACHE_DIR=str(cache))
  procs = []
  for i in range(count):
    env, joining = dict(base), []
    if count > 1 and by_env:
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count),
                 JAX_PROCESS_ID=str(i))
    elif count > 1:
      joining = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
                 f"--process_id={i}"]
    command = [sys.executable, *program, *SMALL, f"--workdir={workdir}",
               f"--config.train.steps={steps}", f"--distributed_timeout={timeout}", *joining,
               *flags]
    procs.append(processes.start(command, log=f"{workdir}.{i}.log", cwd=ROOT, env=env))
  return procs


def _log(workdir, i) -> str:
  return pathlib.Path(f"{workdir}.{i}.log").read_text(errors="replace")


def _run_together(cache, *jobs) -> None:
  """Runs jobs (workdir, processes, options) side by side; each of their processes must succeed."""
  ports = _free_ports(len(jobs))
  started = [(workdir, _start(workdir, count, port, cache=cache, **options))
             for (workdir, count, options), port in zip(jobs, ports)]
  processes.wait([proc for _, procs in started for proc in procs])
  for workdir, procs in started:
    for i, proc in enumerate(procs):
      assert proc.returncode == 0, (
          f"{workdir} process {i} exited with {proc.returncode}:\n{proc.tail()}")



def _metrics(workdir):
  """({step: train loss}, final test metrics) from the run's metrics.jsonl."""
  records = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  losses = {r["step"]: r["loss"] for r in records if "loss" in r}
  return losses, [r for r in records if "test_accuracy" in r][-1]


def _assert_same_results(workdir, reference, steps=(1, 2, 3, 4)):
  losses, test = _metrics(workdir)
  reference_losses, reference_test = _metrics(reference)
  assert sorted(losses) == list(steps)
  np.testing.assert_allclose([losses[s] for s in steps], [reference_losses[s] for s in steps],
                             atol=1e-5)
  assert test["test_examples"] == reference_test["test_examples"] == 359
  assert test["test_accuracy"] == reference_test["test_accuracy"]
  assert test["test_loss"] == pytest.approx(reference_test["test_loss"], abs=1e-5)
  # Parameters to 1e-4: the attention key bias has no true gradient (softmax ignores it), so Adam
  # turns the rounding of differently ordered sums into updates of up to ~1e-5 per step.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
               restore_params(workdir), restore_params(reference))


# ----------------------------------------------------------------------------- same results

@pytest.fixture(scope="module")
def jobs(tmp_path_factory, compilation_cache):
  """Workdirs of 4-step jobs (checkpoints at steps 2 and 4): 'one' (1 process x 8 devices) and
  'two' (2 x 4), and 'two_then_one' / 'one_then_two': each resumed from the other's step 2 (and
  loading the programs compiled by the job of its process count)."""
  root = tmp_path_factory.mktemp("multihost")
  _run_together(compilation_cache, (root / "one", 1, {}), (root / "two", 2, {}))
  for saved, resumed in (("two", "two_then_one"), ("one", "one_then_two")):
    shutil.copytree(root / saved, root / resumed)
    shutil.rmtree(root / resumed / "checkpoints" / "4")  # As if the job died after step 2 was saved.
    os.remove(root / resumed / "metrics.jsonl")
  _run_together(compilation_cache, (root / "two_then_one", 1, {}),
                (root / "one_then_two", 2, {"by_env": True}))  # Joined by JAX_* variables.
  return root


def test_two_processes_of_four_devices_train_like_one_process_of_eight(jobs):
  _assert_same_results(jobs / "two", jobs / "one")


def test_a_checkpoint_of_two_processes_resumes_in_one_process_to_the_same_result(jobs):
  _assert_same_results(jobs / "two_then_one", jobs / "two", steps=(3, 4))


def test_a_checkpoint_of_one_process_resumes_in_two_processes_to_the_same_result(jobs):
  _assert_same_results(jobs / "one_then_two", jobs / "one", steps=(3, 4))


# ----------------------------------------------------------------------------- stopping together

def _wait_until_training(workdir, procs) -> None:
  """Waits (on the job's progress) until process 0 has logged a train step; fails if one exits."""
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  processes.wait(procs, until=lambda: metrics.exists() and metrics.stat().st_size > 0)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
  """Three 2-process jobs, side by side, interrupted while training: in 'failing' process 1 raises
  at step 2; in 'killed' process 1 is killed (SIGKILL); in 'preempted' process 1 gets SIGTERM.
  Returns {job: (exit codes, seconds from the interruption to the exit of process 0, or of both
  processes for 'preempted')} and 'allowed': how many seconds a survivor may take to stop.

  Only 'killed' relies on --distributed_timeout (TIMEOUT): JAX notices the silent process after it.
  A survivor may take TIMEOUT + SLACK seconds, or, on a machine so loaded that the jobs took longer
  than SLACK to start training, TIMEOUT plus that start-up time: stopping does less work than
  starting, and a survivor that failed to stop would run on until its hard limit."""
  root = tmp_path_factory.mktemp("stopped")
  ports = _free_ports(3)
  endless = dict(steps=1000, flags=("--config.train.checkpoint_every=1000",))  # No shared cache.
  started = time.time()
  failing = _start(root / "failing", 2, ports[0], program=(FAILING_MAIN, "1", "2"), **endless)
  killed = _start(root / "killed", 2, ports[1], timeout=TIMEOUT, **endless)
  preempted = _start(root / "preempted", 2, ports[2], **endless)
  everything = failing + killed + preempted
  try:
    _wait_until_training(root / "killed", killed)
    start_up = time.time() - started
    killed[1].kill()  # SIGKILL, as when its host dies.
    kill_time = time.time()
    _wait_until_training(root / "preempted", preempted)
    preempted[1].signal(signal.SIGTERM)
    term_time = time.time()
    exits = processes.wait(everything)
  finally:
    for proc in everything:
      proc.kill()
  # Process 1 of 'failing' fails while process 0 logs step 2 (in metrics.jsonl) and waits for it.
  fail_time = (root / "failing" / "metrics.jsonl").stat().st_mtime
  codes = [proc.returncode for proc in everything]
  return {"failing": (codes[0:2], exits[0] - fail_time),
          "killed": (codes[2:4], exits[2] - kill_time),
          "preempted": (codes[4:6], max(exits[4], exits[5]) - term_time), "root": root,
          "allowed": TIMEOUT + max(SLACK, start_up)}



def test_a_process_that_fails_stops_the_others_with_a_message_naming_it(stopped):
  (survivor, failed), seconds = stopped["failing"]
  job = stopped["root"] / "failing"
  assert survivor == 1, _log(job, 0)[-3000:]
  assert seconds < stopped["allowed"], (seconds, stopped["allowed"])
  assert ("vit_jax: stopping process 0 of 2 because process 1 of 2 failed (RuntimeError: injected "
          "failure at step 2); its log has the traceback.") in _log(job, 0)
  assert failed != 0
  assert "Traceback" in _log(job, 1)
  assert "vit_jax: process 1 of 2 failed (RuntimeError: injected failure" in _log(job, 1)


def test_a_killed_process_stops_the_others_within_the_timeout(stopped):
  (survivor, _), seconds = stopped["killed"]
  survivor_log = _log(stopped["root"] / "killed", 0)
  assert survivor not in (0, 124, 137), survivor_log[-3000:]  # Stopped by JAX, not by `timeout`.
  assert seconds < stopped["allowed"], (seconds, stopped["allowed"])
  assert "if another process fails or dies, this one stops too, within 15 s" in survivor_log
  # Then JAX's words: its coordination service names the silent process, or gloo (when the
  # survivor was in a collective with it) fails.
  assert ("The following tasks are unhealthy (stopped sending heartbeats):\n1" in survivor_log or
          re.search(r"instance of 'gloo::\w+'", survivor_log)), survivor_log[-3000:]


def test_sigterm_to_one_process_saves_and_stops_all_of_them_at_one_step(stopped):
  codes, seconds = stopped["preempted"]
  job = stopped["root"] / "preempted"
  logs = [_log(job, i) for i in range(2)]
  assert codes == [1, 1], logs[0][-3000:]  # SystemExit with the message below.
  assert seconds < stopped["allowed"], (seconds, stopped["allowed"])
  said = [re.search(r"preempted \(SIGTERM\): saved step (\d+); rerun the same command", log)
          for log in logs]
  assert all(said), logs[1][-3000:]
  assert said[0].group(1) == said[1].group(1)
  assert restore_params(job)  # The saved step restores.
  assert sorted(os.listdir(job / "checkpoints")) == [said[0].group(1)]


# ----------------------------------------------------------------------------- in-process units

class FakeClient:
  """The two key-value calls of JAX's coordination client that multihost uses."""

  def __init__(self, notices=()):
    self.values = dict(notices)

  def key_value_set(self, key, value, allow_overwrite=False):
    assert allow_overwrite or key not in self.values
    self.values[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


@pytest.fixture
def two_processes(monkeypatch):
  """Pretends this is process 1 of 2; returns the exit messages that stop_together would print."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(multihost, "GRACE_SECONDS", 0.0)
  monkeypatch.setattr(multihost, "POLL_SECONDS", 0.01)
  return []


def test_a_single_process_raises_as_usual():
  with pytest.raises(RuntimeError, match="plain"):
    with multihost.stop_together():
      raise RuntimeError("plain")


def test_a_failure_is_posted_naming_the_process_and_the_error(two_processes):
  client = FakeClient()
  with multihost.stop_together(client, exit_fn=two_processes.append):
    raise ValueError("disk full\nmore detail")
  assert client.values == {
      "vit_jax/failed/1": "process 1 of 2 failed (ValueError: disk full); its log has the traceback."}
  assert two_processes == [""]  # Exits (status 1); the message went to stderr before the grace.


def test_another_process_failure_notice_stops_this_one(two_processes):
  client = FakeClient({"vit_jax/failed/0": "process 0 of 2 failed (OSError: gone); its log has "
                                           "the traceback."})
  stopped = threading.Event()
  with multihost.stop_together(client, exit_fn=lambda m: (two_processes.append(m), stopped.set())):
    assert stopped.wait(5)
  assert two_processes == ["vit_jax: stopping process 1 of 2 because process 0 of 2 failed "
                           "(OSError: gone); its log has the traceback."]


def test_connect_reads_the_jax_environment_variables_and_applies_the_timeout(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(name, raising=False)
  multihost.connect(None, None, None, timeout=20)
  assert not calls  # One process: nothing to join.
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  multihost.connect(None, None, None, timeout=20)
  multihost.connect("10.0.0.2:99", 2, 0, timeout=500)  # Flags win over the environment.
  assert calls == [
      dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
           initialization_timeout=20, heartbeat_timeout_seconds=20, shutdown_timeout_seconds=20),
      dict(coordinator_address="10.0.0.2:99", num_processes=2, process_id=0,
           initialization_timeout=500, heartbeat_timeout_seconds=100,
           shutdown_timeout_seconds=500)]

