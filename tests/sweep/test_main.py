"""Specification of `python -m vit_jax.sweep` end to end, with the real trainer: a two-trial sweep
of a tiny digits job in which one trial's value is one the trainer rejects; the results table, the
plots, a rerun that skips the finished trial, --print_commands, and a typo stopped before any run."""
import csv
import json
import os
import pathlib
import shlex
import sys
import textwrap

import pytest

from vit_jax.sweep import trial_record

from .. import processes

ROOT = pathlib.Path(__file__).resolve().parents[2]

SWEEP = textwrap.dedent("""\
    from vit_jax.config_cli import load_config_file
    from vit_jax.sweep.space import axis

    def get_config():
      config = load_config_file({default!r})
      config.unlock()
      config.model_name = "ViT-micro/4"
      config.data.image_size = 8
      config.data.pp_batch = "inception_crop(8, area_min=0.8)|value_range(-1, 1)"
      config.batch_size, config.eval_batch_size = 16, 128
      config.train.epochs, config.train.steps, config.optim.warmup_steps = 0.0, 3, 1
      return config.lock()

    def get_sweep():
      return axis({key!r}, [1, 0])  # the trainer refuses log_every=0
    """)


def sweep_cli(*args):
  env = dict(os.environ, XLA_FLAGS=processes.xla_flags(1))
  return processes.run([sys.executable, "-m", "vit_jax.sweep", *args], cwd=ROOT, env=env)


def write_sweep(tmp_path, key="train.log_every"):
  path = tmp_path / "tiny_sweep.py"
  path.write_text(SWEEP.format(default=f"{ROOT}/configs/default.py:pretrain", key=key))
  return str(path)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The sweep run once, then again on the same workdir: (workdir, first run, rerun)."""
  tmp_path = tmp_path_factory.mktemp("sweep")
  sweep, workdir = write_sweep(tmp_path), tmp_path / "out"
  first = sweep_cli(f"--config={sweep}", f"--workdir={workdir}", "--parallel=2")
  records_after_first = {name: trial_record.read(str(workdir / name))
                         for name in ("log_every=1", "log_every=0")}
  rerun = sweep_cli(f"--config={sweep}", f"--workdir={workdir}", "--parallel=2")
  return workdir, first, rerun, records_after_first


def test_the_sweep_runs_every_trial_and_records_the_one_the_trainer_refused(swept):
  workdir, first, _, records = swept
  assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]  # a trial failed
  assert records["log_every=1"]["status"] == "finished", records
  assert records["log_every=0"]["status"] == "failed"
  assert records["log_every=0"]["error_tail"][-1].startswith(
      "error: config.train.log_every=0: steps between logged metrics must be at least 1")
  assert "final test accuracy: " in (workdir / "log_every=1" / trial_record.LOG).read_text()
  assert (workdir / "log_every=1" / "checkpoints" / "3").is_dir()
  assert "1 failed: see log.txt in log_every=0" in first.stderr


def test_results_csv_has_a_row_per_trial_and_the_plots_are_written(swept):
  workdir, first, _, _ = swept
  ok, failed = list(csv.DictReader(open(workdir / "results.csv")))
  assert (ok["trial"], ok["status"], ok["train.log_every"], ok["last_step"]) == (
      "log_every=1", "finished", "1", "3")
  final_rows = [json.loads(line) for line in open(workdir / "log_every=1" / "metrics.jsonl")]
  assert float(ok["final_test_accuracy"]) == [r for r in final_rows if "test_accuracy" in r][-1][
      "test_accuracy"]
  assert (failed["trial"], failed["status"], failed["final_test_accuracy"]) == (
      "log_every=0", "failed", "")
  assert failed["error"].startswith("error: config.train.log_every=0")
  assert "| log_every=1 | finished | 1 |" in (workdir / "results.md").read_text()
  assert "| log_every=1 | finished | 1 |" in first.stdout  # the table is printed too
  assert sorted(p.name for p in (workdir / "plots").iterdir()) == [
      f"{metric}_vs_train.log_every.png" for metric in ("test_accuracy", "test_loss",
                                                        "test_top5_accuracy")]


def test_a_rerun_skips_the_finished_trial_and_runs_the_failed_one_again(swept):
  workdir, _, rerun, _ = swept
  assert rerun.returncode == 1
  assert "1 of 2 trials finished earlier: skipped" in rerun.stdout
  assert trial_record.read(str(workdir / "log_every=1"))["attempts"] == 1
  assert trial_record.read(str(workdir / "log_every=0"))["attempts"] == 2
  assert (workdir / "log_every=1" / trial_record.LOG).read_text().count("=== attempt") == 1


def test_print_commands_prints_one_trainer_command_per_trial_and_runs_nothing(tmp_path):
  sweep = write_sweep(tmp_path)
  done = sweep_cli(f"--config={sweep}", f"--workdir={tmp_path}/out", "--print_commands")
  assert done.returncode == 0, done.stderr
  lines = done.stdout.strip().splitlines()
  assert [shlex.split(line)[3:] for line in lines] == [
      [f"--config={sweep}", f"--workdir={tmp_path}/out/log_every={v}", f"--config.train.log_every={v}"]
      for v in (1, 0)]
  assert shlex.split(lines[0])[:3] == [sys.executable, "-m", "vit_jax.main"]
  assert not (tmp_path / "out").exists()


def test_a_typo_in_a_swept_key_stops_the_sweep_in_one_line_before_any_trial(tmp_path):
  sweep = write_sweep(tmp_path, key="train.log_evry")
  done = sweep_cli(f"--config={sweep}", f"--workdir={tmp_path}/out")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: trial log_evry=1: unknown config key config.train.log_evry; did you mean "
      "config.train.log_every, config.train.checkpoint_every?"]
  assert not (tmp_path / "out").exists()
