"""Runs a sweep's trials as separate processes, `parallel` at a time, each in its own directory.

Each trial's output goes to `<root>/<trial>/log.txt` (appended: every attempt is kept) and its
status to `trial.json` (trial_record.py). A failing trial is recorded with the tail of its log and
the others go on. A trial already 'finished' is skipped, so rerunning a sweep runs what is left:
the trainer resumes each unfinished trial from the checkpoints in its directory.

Trials run in their own sessions, so a Ctrl-C in the terminal reaches the runner alone: on SIGINT
or SIGTERM it sends SIGTERM to every running trial (the trainer saves its step and exits), records
them 'interrupted', and starts nothing more; a second signal kills them. `command_for(trial,
trial_dir)` gives each trial's command line: the trainer's (commands.py), or a stand-in in tests.
"""
import dataclasses
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Optional, Sequence

from vit_jax.sweep import commands, trial_record
from vit_jax.sweep.sweep_file import Trial

CommandFor = Callable[[Trial, str], Sequence[str]]
_SAVE_SECONDS = 120  # after the runner fails, how long a trial gets to save before it is killed


@dataclasses.dataclass
class Outcome:
  """What one run of the runner did, by trial name."""
  finished: list = dataclasses.field(default_factory=list)
  failed: list = dataclasses.field(default_factory=list)
  interrupted: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)  # finished by an earlier run

  @property
  def stopped(self) -> bool:
    return bool(self.interrupted)


@dataclasses.dataclass
class _Running:
  trial: Trial
  directory: str
  process: subprocess.Popen
  started: float
  record: dict


class _StopSignals:
  """Counts SIGINT/SIGTERM while installed (main thread only; elsewhere nothing is installed)."""

  def __init__(self):
    self.count = 0
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._received)
    return self

  def _received(self, signum, frame):
    del signum, frame
    self.count += 1

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
  try:
    os.killpg(process.pid, signum)
  except ProcessLookupError:
    pass


def _start(trial: Trial, root: str, command_for: CommandFor, env: Optional[dict]
           ) -> Optional[_Running]:
  """Starts the trial, its record 'running'; None (the record 'failed') if it cannot start."""
  directory = os.path.join(root, trial.name)
  os.makedirs(directory, exist_ok=True)
  previous = trial_record.read(directory) or {}
  command = [str(part) for part in command_for(trial, directory)]
  record = {"name": trial.name, "overrides": trial.overrides, "command": commands.shell_line(command),
            "status": trial_record.RUNNING, "returncode": None,
            "attempts": previous.get("attempts", 0) + 1,
            "wall_seconds": previous.get("wall_seconds", 0.0),
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "ended_at": None, "error_tail": []}
  trial_record.write(directory, record)
  with open(os.path.join(directory, trial_record.LOG), "ab") as log:
    log.write(f"=== attempt {record['attempts']} at {record['started_at']}: "
              f"{record['command']}\n".encode())
    log.flush()
    try:
      process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
      return _Running(trial, directory, process, time.monotonic(), record)
    except OSError as e:  # recorded as a failure of this trial; the others go on
      log.write(f"error: the trial's command cannot start: {e}\n".encode())
  record.update(status=trial_record.FAILED, ended_at=record["started_at"],
                error_tail=trial_record.log_tail(directory))
  trial_record.write(directory, record)
  return None


def _end(running: _Running, returncode: int, stopping: bool) -> str:
  record = running.record
  if returncode == 0:
    status = trial_record.FINISHED
  else:
    status = trial_record.INTERRUPTED if stopping else trial_record.FAILED
  record.update(status=status, returncode=returncode, ended_at=time.strftime("%Y-%m-%d %H:%M:%S"),
                wall_seconds=record["wall_seconds"] + time.monotonic() - running.started,
                error_tail=[] if status == trial_record.FINISHED
                else trial_record.log_tail(running.directory))
  trial_record.write(running.directory, record)
  return status


def run(trials: Sequence[Trial], root: str, command_for: CommandFor, *, parallel: int = 1,
        env: Optional[dict] = None, echo: Callable[[str], None] = print,
        poll_seconds: float = 0.2) -> Outcome:
  """Runs every trial not yet finished, `parallel` at a time; returns what happened to each."""
  if parallel < 1:
    raise ValueError(f"parallel={parallel}: run at least 1 trial at a time")
  outcome = Outcome()
  waiting = []
  for trial in trials:
    if trial_record.status(trial_record.read(os.path.join(root, trial.name))) == trial_record.FINISHED:
      outcome.skipped.append(trial.name)
    else:
      waiting.append(trial)
  if outcome.skipped:
    echo(f"{len(outcome.skipped)} of {len(trials)} trials finished earlier: skipped")
  total, started_count, done = len(waiting), 0, 0
  running: list[_Running] = []
  signals_sent = 0
  with _StopSignals() as stops:
    try:
      while waiting or running:
        if stops.count > signals_sent and running:  # forward: first SIGTERM, then SIGKILL
          signum = signal.SIGTERM if signals_sent == 0 else signal.SIGKILL
          for r in running:
            _signal_group(r.process, signum)
          echo(f"stopping: {signal.Signals(signum).name} sent to {len(running)} running trials"
               + ("; they save and exit (signal again to kill them)" if signals_sent == 0 else ""))
          signals_sent = stops.count
        while waiting and len(running) < parallel and not stops.count:
          trial = waiting.pop(0)
          started_count += 1
          started = _start(trial, root, command_for, env)
          if started is None:
            done += 1
            outcome.failed.append(trial.name)
            echo(f"failed {trial.name}: "
                 f"{trial_record.read(os.path.join(root, trial.name))['error_tail'][-1]}"
                 f" ({done}/{total} done)")
            continue
          running.append(started)
          echo(f"started {trial.name} ({started_count}/{total})")
        for r in list(running):
          returncode = r.process.poll()
          if returncode is None:
            continue
          running.remove(r)
          done += 1
          status = _end(r, returncode, stopping=stops.count > 0)
          getattr(outcome, status).append(r.trial.name)
          detail = f"{r.record['wall_seconds']:.0f} s, {done}/{total} done"
          if status == trial_record.FAILED:
            last = (r.record["error_tail"] or ["(no output)"])[-1]
            echo(f"failed {r.trial.name} (exit {returncode}, {detail}): {last}")
          else:
            echo(f"{status} {r.trial.name} ({detail})")
        if stops.count and not running:
          break
        time.sleep(poll_seconds)
    finally:
      for r in running:  # an error in the runner itself: leave no trial running unrecorded
        _signal_group(r.process, signal.SIGTERM)
        try:
          returncode = r.process.wait(timeout=_SAVE_SECONDS)
        except subprocess.TimeoutExpired:
          _signal_group(r.process, signal.SIGKILL)
          returncode = r.process.wait()
        _end(r, returncode, stopping=True)
  return outcome
