"""A trial's status file, `<sweep workdir>/<trial>/trial.json`: what ran, how it ended, how long.

The runner writes it when a trial starts (status 'running') and when it ends ('finished', 'failed',
or 'interrupted' when the sweep was stopped); a rerun of the sweep skips 'finished' trials and runs
the others again in the same directory, where the trainer resumes from its checkpoints. Written
whole (vit_jax/whole_files.py), so a reader never sees half a file.
"""
import json
import os
from typing import Optional

from vit_jax import whole_files

FILE = "trial.json"
LOG = "log.txt"          # the trial's stdout and stderr, every attempt appended
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
PENDING = "pending"      # no status file yet: the trial has not started
ERROR_TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024  # read from the end of a log: progress bars make long ones


def path(trial_dir: str) -> str:
  return os.path.join(trial_dir, FILE)


def read(trial_dir: str) -> Optional[dict]:
  """The trial's record, or None when it has not started (or its file is unreadable)."""
  try:
    with open(path(trial_dir)) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def write(trial_dir: str, record: dict) -> None:
  whole_files.write_text(path(trial_dir), json.dumps(record, indent=2, default=repr) + "\n")


def status(record: Optional[dict]) -> str:
  return record["status"] if record else PENDING


def log_tail(trial_dir: str, lines: int = ERROR_TAIL_LINES) -> list[str]:
  """The last `lines` non-empty lines of the trial's log (progress-bar redraws split at '\\r')."""
  try:
    with open(os.path.join(trial_dir, LOG), "rb") as f:
      f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
      text = f.read().decode(errors="replace")
  except FileNotFoundError:
    return []
  kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
  return kept[-lines:]
