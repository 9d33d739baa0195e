"""`python -m vit_jax.sweep --config=SWEEP.py[:arg] --workdir=DIR [--parallel=N]`: runs every trial
of a sweep file as its own trainer process in DIR/<trial name>, N at a time, and gathers the results
into DIR/results.csv, DIR/results.md and DIR/plots/*.png.

A rerun skips finished trials and resumes the others from their checkpoints. --print_commands
prints each trial's command line instead (for a cluster scheduler); --results_only gathers without
running anything. The exit status is 1 when a trial failed or the sweep was stopped.
"""
import os
import sys

from absl import app, flags

from vit_jax import paths
from vit_jax.sweep import commands, runner, sweep_file, trial_record

_CONFIG = flags.DEFINE_string("config", None, "Sweep file with get_config() and get_sweep(), e.g. "
                              "configs/sweeps/regularization.py (':arg' goes to both).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep: one subdirectory per trial, "
                               "the results table and plots.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials run at the same time on this machine.")
_PRINT_COMMANDS = flags.DEFINE_bool("print_commands", False, "Print one command line per trial and "
                                    "run nothing.")
_RESULTS_ONLY = flags.DEFINE_bool("results_only", False, "Gather the results of what has run, "
                                  "run nothing.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  raise SystemExit(2)


def gather(sweep: sweep_file.Sweep, workdir: str) -> tuple[list, list[str]]:
  """Writes results.csv, results.md and the plots; returns (the results, the files written)."""
  from vit_jax.sweep import plots, results  # pylint: disable=import-outside-toplevel
  gathered = results.gather(sweep.trials, workdir, list(sweep.config.evals.keys()))
  written = results.write(workdir, gathered, sweep.swept_keys, title=f"Sweep {sweep.spec}")
  written += plots.write(workdir, gathered, sweep.varying_keys)
  return gathered, written


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _PARALLEL.value < 1:
    _fail(f"--parallel={_PARALLEL.value}: run at least 1 trial at a time")
  workdir = paths.expand(_WORKDIR.value)
  try:
    sweep = sweep_file.load(_CONFIG.value)
  except sweep_file.SweepError as e:
    _fail(str(e))
  trial_commands = {}
  for trial in sweep.trials:
    try:
      trial_commands[trial.name] = commands.trial_command(
          _CONFIG.value, os.path.join(workdir, trial.name), trial.overrides)
    except ValueError as e:
      _fail(f"trial {trial.name}: {e}")
  if _PRINT_COMMANDS.value:
    for command in trial_commands.values():
      print(commands.shell_line(command))
    return 0
  outcome = None
  if not _RESULTS_ONLY.value:
    print(f"{len(sweep.trials)} trials of {_CONFIG.value} in {workdir}, {_PARALLEL.value} at a time")
    outcome = runner.run(sweep.trials, workdir, lambda trial, _: trial_commands[trial.name],
                         parallel=_PARALLEL.value)
  gathered, written = gather(sweep, workdir)
  print(open(written[1]).read().rstrip())
  print(f"wrote {', '.join(written[:2])} and {len(written) - 2} plots in "
        f"{os.path.join(workdir, 'plots')}")
  if outcome and outcome.stopped:
    print("stopped: rerun the same command to resume the unfinished trials")
  failed = [r.name for r in gathered if r.status == trial_record.FAILED]
  if failed:
    print(f"{len(failed)} failed: see log.txt in {', '.join(failed)}", file=sys.stderr)
  return 1 if failed or (outcome and outcome.stopped) else 0


if __name__ == "__main__":
  app.run(main)
