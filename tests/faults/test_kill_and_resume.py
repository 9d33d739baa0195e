"""Specification of surviving a crash: a run killed at any moment (kill -9, also while a checkpoint is
being written) or preempted (SIGTERM), then rerun with the same command, ends in exactly the state of
a run never interrupted, and its metrics.jsonl holds every step once.

One module-scoped job does the heavy work and the tests read its results. Besides the reference run,
two workdirs (run side by side: the machine has 2 cores) are each interrupted three times, every
rerun being the next one interrupted, then rerun to the end: 5 SIGKILLs (2 of them once a save is in
flight) and 1 SIGTERM. Interruption i draws its moment from random.Random(i) within its part of the
run; what was planned and what happened is printed and named in every assertion message. That is 9
processes of `python -m vit_jax.main` (each ~5-10 s of imports; one interrupted run per kill, one
rerun per workdir): chaining the interruptions saves a rerun per kill over separate trials.
"""
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import random
import re
import signal
import sys

import jax
import numpy as np
import pytest

from vit_jax.checkpoint import Checkpointer

from .. import processes

# Its module-scoped job runs once: pytest-xdist keeps this file on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("faults")

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS, SAVE_EVERY = 12, 2
FLAGS = ("--config=configs/default.py:pretrain", "--config.model_name=ViT-micro/4",
         "--config.train.epochs=0", f"--config.train.steps={STEPS}", "--config.optim.warmup_steps=1",
         "--config.batch_size=16", "--config.train.log_every=1",
         f"--config.train.checkpoint_every={SAVE_EVERY}", "--config.train.keep_checkpoints=3")
KILL, KILL_DURING_SAVE, SIGTERM = "SIGKILL", "SIGKILL during a save", "SIGTERM"
# Per workdir: (kind, seed, the steps where it may fall), in order; the windows leave the later
# interruptions steps to fall on, and a SIGTERM room to be handled before the run ends.
CHAINS = {
    "a": ((KILL, 0, (1, 3)), (KILL_DURING_SAVE, 1, (4, 7)), (KILL, 2, (8, 11))),
    "b": ((SIGTERM, 3, (1, 3)), (KILL_DURING_SAVE, 4, (4, 7)), (KILL, 5, (8, 11))),
}
TEMPORARY = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")  # Orbax's name for a save in flight.
TIMING_METRICS = ("images_per_sec", "mfu")  # Wall-clock measures: the only values that may differ.


@dataclasses.dataclass
class Interruption:
  seed: int
  kind: str
  step: int                    # The step awaited: its row, or its save in flight.
  story: list[str]             # What was planned and what happened, for messages.
  output: str                  # What the interrupted run printed.
  returncode: int
  rows_left: list[dict]        # metrics.jsonl as the interrupted run left it.
  steps_on_disk: list[int]     # Complete checkpoint steps it left.
  partial_on_disk: list[str]   # Temporary (unfinished) checkpoint directories it left.
  resumed_from: int = -1       # The step the next run said it resumed from (0: started afresh).

  def __str__(self):
    return f"interruption {self.seed} (random.Random({self.seed})): " + "; ".join(self.story)


def command(workdir):
  return [sys.executable, "-m", "vit_jax.main", *FLAGS, f"--workdir={workdir}"]


def rows(path) -> list[dict]:
  """The rows of a metrics file (a torn last line, as a kill may leave, is ignored)."""
  if not path.exists():
    return []
  parsed = []
  for line in path.read_text().splitlines():
    try:
      parsed.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return parsed


def logged_steps(workdir) -> set[int]:
  return {row["step"] for row in rows(workdir / "metrics.jsonl")}


def on_disk(workdir) -> tuple[list[int], list[str]]:
  """(complete checkpoint steps, names of temporary directories) under <workdir>/checkpoints."""
  directory = workdir / "checkpoints"
  names = sorted(os.listdir(directory)) if directory.is_dir() else []
  return sorted(int(n) for n in names if n.isdigit()), [n for n in names if TEMPORARY.match(n)]


def in_flight(workdir) -> list[int]:
  """Steps whose checkpoint is being written (or was, by a run killed meanwhile)."""
  return [int(TEMPORARY.match(name).group(1)) for name in on_disk(workdir)[1]]


def resumed_step(output: str) -> int:
  match = re.search(r"resuming from step (\d+) of", output)
  assert match or "starting at step 0 of" in output, output[-3000:]
  return int(match.group(1)) if match else 0


def interrupt(workdir, kind, seed, window, env, log) -> Interruption:
  """Starts the run and interrupts it at a moment drawn by random.Random(seed) within `window`,
  after every row and save a previous run left (so the one awaited is this run's own)."""
  rng = random.Random(seed)
  after = max(logged_steps(workdir) | set(in_flight(workdir)), default=0)
  proc = processes.start(command(workdir), log=log, cwd=ROOT, env=env)
  if kind == KILL_DURING_SAVE:
    step = max(rng.randrange(window[0] + window[0] % 2, window[1] + 1, SAVE_EVERY),
               after + 1 + (after + 1) % 2)
    story = [f"{kind} once the save of step {step} or later is in flight"]
    print(f"interruption {seed}: {story[0]}", flush=True)
    seen = 0  # The newest save seen in flight.

    def save_in_flight():
      nonlocal seen
      seen = max(in_flight(workdir), default=0)
      # A save may finish between two looks: then the kill falls on the last step's row instead.
      return seen >= step or STEPS in logged_steps(workdir)

    processes.wait([proc], poll=0.005, until=save_in_flight)
  else:
    step = max(rng.randint(*window), after + 1)
    story = [f"{kind} once metrics.jsonl shows step {step}"]
    print(f"interruption {seed}: {story[0]}", flush=True)
    processes.wait([proc], until=lambda: step in logged_steps(workdir))
  try:
    proc.signal(signal.SIGTERM if kind == SIGTERM else signal.SIGKILL)
  except (AssertionError, ProcessLookupError):  # It has exited: the story says how.
    pass
  processes.wait([proc])
  left = rows(workdir / "metrics.jsonl")
  steps, partial = on_disk(workdir)
  if kind == KILL_DURING_SAVE and seen < step:
    story.append("saw no save in flight (each finished between two looks)")
  elif kind == KILL_DURING_SAVE:
    story.append(f"saw the save of step {seen} in flight; it was "
                 + ("left unfinished" if partial else "committed before the kill landed"))
  story.append(f"the run stopped with exit code {proc.returncode} after logging step "
               f"{max((row['step'] for row in left), default=0)}, leaving checkpoints {steps}"
               + (f" and temporary directories {partial}" if partial else ""))
  return Interruption(seed, kind, step, story, proc.output(), proc.returncode, left, steps, partial)


def run_chain(workdir: pathlib.Path, plan, env) -> list[Interruption]:
  """Interrupts the runs of `workdir` as `plan` says, each rerun being the next one interrupted,
  then reruns it to the end."""
  done = []
  for kind, seed, window in plan:
    done.append(interrupt(workdir, kind, seed, window, env, log=f"{workdir}.{seed}.log"))
  final = processes.run(command(workdir), cwd=ROOT, env=env)
  assert final.returncode == 0, f"{done[-1]}; the last rerun failed:\n{final.stderr[-3000:]}"
  outputs = [i.output for i in done[1:]] + [final.stdout]
  for interruption, next_output in zip(done, outputs):
    interruption.resumed_from = resumed_step(next_output)
    interruption.story.append(f"the next run resumed from step {interruption.resumed_from}")
    print(interruption, flush=True)
  return done


@pytest.fixture(scope="module")
def job(tmp_path_factory, compilation_cache):
  """The reference run and the interrupted ones: (reference workdir, {workdir: [Interruption]})."""
  base = tmp_path_factory.mktemp("kill_and_resume")
  # The test's own environment (8 fake CPU devices: the same mesh in every run) and one compilation
  # cache, which every program enters (the quick ones too): only the reference run compiles.
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", XLA_FLAGS=processes.xla_flags(8))
  reference = base / "reference"
  proc = processes.start(command(reference), log=f"{reference}.log", cwd=ROOT, env=env)
  # The others start once it has saved its first checkpoint: its train step and saving programs are
  # then in the cache, and their imports overlap its remaining steps.
  processes.wait([proc], until=lambda: SAVE_EVERY in on_disk(reference)[0])
  with concurrent.futures.ThreadPoolExecutor(max_workers=len(CHAINS)) as pool:
    futures = {base / name: pool.submit(run_chain, base / name, plan, env)
               for name, plan in CHAINS.items()}
    processes.wait([proc])
    assert proc.returncode == 0, proc.tail()
  return reference, {workdir: future.result() for workdir, future in futures.items()}


def describe(interruptions) -> str:
  return "\n".join(map(str, interruptions))


def final_state(workdir):
  with Checkpointer(workdir / "checkpoints") as ckpt:
    state, extra = ckpt.restore()
  return jax.tree_util.tree_flatten_with_path(state)[0], extra


def test_the_plan_has_five_kills_two_during_a_save_and_a_sigterm():
  kinds = [kind for plan in CHAINS.values() for kind, _, _ in plan]
  assert len([k for k in kinds if k.startswith(KILL)]) == 5
  assert kinds.count(KILL_DURING_SAVE) == 2 and kinds.count(SIGTERM) == 1


def test_interrupted_runs_end_in_the_reference_state_bit_for_bit(job):
  reference, chains = job
  expected, expected_extra = final_state(reference)
  assert {jax.tree_util.keystr(p): v for p, v in expected}["['step']"] == STEPS
  for workdir, interruptions in chains.items():
    leaves, extra = final_state(workdir)
    assert [p for p, _ in leaves] == [p for p, _ in expected], describe(interruptions)
    assert extra == expected_extra, describe(interruptions)
    differing = [jax.tree_util.keystr(path) for (path, value), (_, want) in zip(leaves, expected)
                 if value.dtype != want.dtype or not np.array_equal(value, want)]
    for (path, value), (_, want) in zip(leaves, expected):  # The first difference, with values.
      np.testing.assert_array_equal(value, want, strict=True, err_msg=(
          f"{jax.tree_util.keystr(path)}: {len(differing)} arrays differ, e.g. {differing[:5]}\n"
          f"{describe(interruptions)}"))


def test_a_rerun_resumes_from_the_newest_checkpoint_completed_and_clears_unfinished_ones(job):
  for workdir, interruptions in job[1].items():
    for interruption in interruptions:
      assert interruption.resumed_from == max(interruption.steps_on_disk, default=0), interruption
    assert on_disk(workdir)[1] == [], describe(interruptions)


def test_every_step_is_logged_once_with_the_reference_values(job):
  reference, chains = job
  expected = rows(reference / "metrics.jsonl")

  def comparable(rows_):
    return [{k: v for k, v in row.items() if k not in TIMING_METRICS} for row in rows_]

  assert [row["step"] for row in expected if "loss" in row] == list(range(1, STEPS + 1))
  for workdir, interruptions in chains.items():
    got = rows(workdir / "metrics.jsonl")
    assert [row["step"] for row in got if "loss" in row] == list(range(1, STEPS + 1)), (
        describe(interruptions))
    assert comparable(got) == comparable(expected), describe(interruptions)  # The final eval too.


def test_rows_logged_after_the_resumed_checkpoint_are_set_aside_not_lost(job):
  for workdir, interruptions in job[1].items():
    abandoned = [row for i in interruptions for row in i.rows_left if row["step"] > i.resumed_from]
    assert rows(workdir / "metrics_set_aside.jsonl") == abandoned, describe(interruptions)


def test_sigterm_saves_the_current_step_says_so_and_the_rerun_resumes_there(job):
  (preempted,) = [i for chain in job[1].values() for i in chain if i.kind == SIGTERM]
  match = re.search(r"preempted \(SIGTERM\): saved step (\d+)", preempted.output)
  assert match, f"{preempted}:\n{preempted.output[-3000:]}"
  saved = int(match.group(1))
  assert preempted.returncode != 0, preempted
  assert preempted.step <= saved < STEPS, preempted
  assert saved in preempted.steps_on_disk and not preempted.partial_on_disk, preempted
  assert preempted.resumed_from == saved, preempted
