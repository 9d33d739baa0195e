"""Specification of the sweep runner, with a stand-in trial program (stand_in_trial.py) in place of
the trainer: N trials at once, a failure recorded while the others run, a rerun that skips finished
trials and resumes the rest, and SIGTERM that stops the trials resumably."""
import json
import pathlib
import signal
import sys

import pytest

from vit_jax.sweep import runner, trial_record
from vit_jax.sweep.sweep_file import Trial

from .. import processes

STAND_IN = pathlib.Path(__file__).with_name("stand_in_trial.py")
TRIALS = [Trial(name, {"seed": i}) for i, name in enumerate("abcde")]


def stand_in(markers, parallel, total, failing=(), waiting_for_sigterm=()):
  """command_for: the stand-in in the trial's directory."""
  def command_for(trial, trial_dir):
    return [sys.executable, str(STAND_IN), trial_dir, str(markers), str(parallel), str(total),
            *(["--fail"] if trial.name in failing else []),
            *(["--wait_for_sigterm"] if trial.name in waiting_for_sigterm else [])]
  return command_for


def runs(root, name):
  path = root / name / "runs.txt"
  return len(path.read_text().split()) if path.exists() else 0


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  """Five trials, two at a time, trial b failing; returns (root, outcome, printed lines)."""
  root = tmp_path_factory.mktemp("sweep")
  printed = []
  outcome = runner.run(TRIALS, str(root), stand_in(root / "markers1", 2, 5, failing={"b"}),
                       parallel=2, echo=printed.append, poll_seconds=0.02)
  return root, outcome, printed


def test_n_trials_run_at_once_and_never_more(first_run):
  root, _, _ = first_run
  counts = [(root / name / "concurrency.txt").read_text().split() for name in "abcde"]
  markers_seen, running_at_start = [int(c[0]) for c in counts], [int(c[1]) for c in counts]
  assert max(markers_seen) == 2  # two trials really ran at the same time
  assert max(running_at_start) <= 2 and max(markers_seen) <= 2  # and never more


def test_a_failing_trial_is_recorded_with_its_error_and_the_others_finish(first_run):
  root, outcome, printed = first_run
  assert sorted(outcome.finished) == ["a", "c", "d", "e"] and outcome.failed == ["b"]
  record = trial_record.read(str(root / "b"))
  assert (record["status"], record["returncode"], record["attempts"]) == ("failed", 3, 1)
  assert record["error_tail"][-1] == "RuntimeError: the stand-in failed on purpose"
  assert record["overrides"] == {"seed": 1} and "stand_in_trial.py" in record["command"]
  assert any(line.startswith("failed b (exit 3, ") and line.endswith("failed on purpose")
             for line in printed)
  finished = trial_record.read(str(root / "a"))
  assert (finished["status"], finished["returncode"], finished["error_tail"]) == ("finished", 0, [])
  assert finished["wall_seconds"] > 0
  assert "=== attempt 1 at " in (root / "a" / trial_record.LOG).read_text()


def test_a_rerun_skips_finished_trials_and_reruns_failed_and_unfinished_ones(first_run):
  root, _, _ = first_run
  # A runner killed while trial f ran leaves it 'running', with the progress its trainer saved.
  (root / "f").mkdir()
  trial_record.write(str(root / "f"), {"status": "running", "attempts": 1, "wall_seconds": 5.0})
  (root / "f" / "progress").write_text("2")
  trials = TRIALS + [Trial("f", {"seed": 5})]
  printed = []
  outcome = runner.run(trials, str(root), stand_in(root / "markers2", 2, 2), parallel=2,
                       echo=printed.append, poll_seconds=0.02)
  assert outcome.skipped == ["a", "c", "d", "e"] and sorted(outcome.finished) == ["b", "f"]
  assert printed[0] == "4 of 6 trials finished earlier: skipped"
  assert [runs(root, name) for name in "abcdef"] == [1, 2, 1, 1, 1, 1]
  b, f = trial_record.read(str(root / "b")), trial_record.read(str(root / "f"))
  assert (b["status"], b["attempts"], b["error_tail"]) == ("finished", 2, [])
  assert (f["status"], f["attempts"]) == ("finished", 2) and f["wall_seconds"] > 5.0
  assert "resuming from step 2" in (root / "f" / trial_record.LOG).read_text()
  assert [json.loads(line)["step"] for line in (root / "f" / "metrics.jsonl").open()] == [3, 4]
  log_b = (root / "b" / trial_record.LOG).read_text()
  assert "=== attempt 1" in log_b and "=== attempt 2" in log_b  # every attempt is kept


def test_sigterm_stops_the_running_trials_resumably_and_starts_no_more(tmp_path):
  root = tmp_path / "sweep"
  script = "\n".join([
      "import sys",
      "from vit_jax.sweep import runner",
      "from vit_jax.sweep.sweep_file import Trial",
      "def command_for(trial, trial_dir):",
      f"  return [sys.executable, {str(STAND_IN)!r}, trial_dir, {str(tmp_path / 'markers')!r}, '1',"
      " '2'] + (['--wait_for_sigterm'] if trial.name == 'x' else [])",
      f"outcome = runner.run([Trial('x', {{}}), Trial('y', {{}})], {str(root)!r}, command_for,"
      " poll_seconds=0.02)",
      "print('interrupted:', outcome.interrupted)"])
  proc = processes.start([sys.executable, "-c", script], log=tmp_path / "runner.log",
                         cwd=pathlib.Path(__file__).resolve().parents[2])
  processes.wait([proc], until=lambda: "waiting for SIGTERM" in (
      (root / "x" / trial_record.LOG).read_text() if (root / "x" / trial_record.LOG).exists()
      else ""))
  proc.signal(signal.SIGTERM)
  processes.wait([proc])
  assert proc.returncode == 0, proc.tail()
  assert "interrupted: ['x']" in proc.output()
  assert "stopping: SIGTERM sent to 1 running trials" in proc.output()
  record = trial_record.read(str(root / "x"))
  assert record["status"] == "interrupted" and record["error_tail"][-1] == (
      "preempted (SIGTERM): saved step 2")
  assert not (root / "y").exists()  # nothing started after the signal
  rerun = runner.run([Trial("x", {}), Trial("y", {})], str(root),
                     stand_in(tmp_path / "markers2", 1, 2), echo=lambda line: None,
                     poll_seconds=0.02)
  assert rerun.finished == ["x", "y"]
  assert "resuming from step 2" in (root / "x" / trial_record.LOG).read_text()


def test_a_command_that_cannot_start_fails_its_trial_only(tmp_path):
  def command_for(trial, trial_dir):
    if trial.name == "a":
      return [str(tmp_path / "no_such_program")]
    return stand_in(tmp_path / "markers", 1, 1)(trial, trial_dir)
  outcome = runner.run(TRIALS[:2], str(tmp_path), command_for, echo=lambda line: None,
                       poll_seconds=0.02)
  assert (outcome.failed, outcome.finished) == (["a"], ["b"])
  assert "cannot start" in trial_record.read(str(tmp_path / "a"))["error_tail"][-1]


def test_parallel_must_be_at_least_one(tmp_path):
  with pytest.raises(ValueError, match="parallel=0: run at least 1 trial at a time"):
    runner.run(TRIALS, str(tmp_path), stand_in(tmp_path, 1, 1), parallel=0)
