"""A stand-in for the trainer in the runner's tests: starts in an instant, resumes from its own
'checkpoint', and shows how many trials ran at once.

  python stand_in_trial.py WORKDIR MARKERS PARALLEL TOTAL [--fail] [--wait_for_sigterm]

It leaves a marker file in MARKERS while it runs and waits until PARALLEL markers are there at once
(or all TOTAL trials of this run have started); WORKDIR/concurrency.txt gets the most markers it saw
and the number of trials its runner had running when it started.
Each run appends to WORKDIR/runs.txt; WORKDIR/progress holds the step it reached (a rerun prints
'resuming from step N'); it writes metrics.jsonl rows as the trainer does. --fail exits 3 after a
traceback; --wait_for_sigterm waits for SIGTERM, saves its progress and exits 1, as the trainer
does when preempted.
"""
import json
import os
import pathlib
import signal
import sys
import time

DEADLINE_SECONDS = 120  # against a hang only: a correct runner never makes it wait this long

workdir, markers, parallel, total = (pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]),
                                     int(sys.argv[3]), int(sys.argv[4]))
workdir.mkdir(parents=True, exist_ok=True)
markers.mkdir(parents=True, exist_ok=True)
with open(workdir / "runs.txt", "a") as f:
  f.write("run\n")
progress = workdir / "progress"
step = int(progress.read_text()) if progress.exists() else 0
if step:
  print(f"resuming from step {step}", flush=True)



def running_trials():
  """How many trials of this run (stand-ins with the same MARKERS) the runner has running now: its
  child processes, read from /proc (a trial that has exited is not running)."""
  parent, count = os.getppid(), 0
  for task in os.listdir(f"/proc/{parent}/task"):
    for pid in pathlib.Path(f"/proc/{parent}/task/{task}/children").read_text().split():
      try:
        count += str(markers).encode() in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
      except (FileNotFoundError, ProcessLookupError):
        continue
  return count


at_start = running_trials()  # before the marker: no trial of this run can have exited yet
mine = markers / workdir.name
mine.touch()
with open(markers / "started.txt", "a") as f:
  f.write(workdir.name + "\n")
deadline = time.monotonic() + DEADLINE_SECONDS
seen = 0
while True:
  live = len([p for p in markers.iterdir() if p.suffix != ".txt"])
  seen = max(seen, live)
  if live >= parallel or len((markers / "started.txt").read_text().split()) >= total:
    break
  if time.monotonic() > deadline:
    mine.unlink()
    sys.exit(f"never saw {parallel} trials at once")
  time.sleep(0.02)


def finish(code, message=""):
  seen_now = len([p for p in markers.iterdir() if p.suffix != ".txt"])
  (workdir / "concurrency.txt").write_text(f"{max(seen, seen_now)} {at_start}")
  mine.unlink()
  if message:
    print(message, file=sys.stderr, flush=True)
  sys.exit(code)


if "--wait_for_sigterm" in sys.argv:
  def saved(signum, frame):
    del signum, frame
    progress.write_text(str(step + 2))
    finish(1, f"preempted (SIGTERM): saved step {step + 2}")
  signal.signal(signal.SIGTERM, saved)
  print("waiting for SIGTERM", flush=True)
  while time.monotonic() < deadline:
    time.sleep(0.05)
  finish(9, "no SIGTERM came")

if "--fail" in sys.argv:
  finish(3, "Traceback (most recent call last):\nRuntimeError: the stand-in failed on purpose")
with open(workdir / "metrics.jsonl", "a") as f:
  for s in range(step + 1, 5):
    f.write(json.dumps({"step": s, "test_accuracy": s / 10}) + "\n")
progress.write_text("4")
finish(0)
