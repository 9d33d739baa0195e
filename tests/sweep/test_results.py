"""Specification of the results table: one row per trial with its overrides, the final and best
value of each evaluation metric from its metrics.jsonl, its last step, wall time, status and error."""
import csv
import json

import pytest

from vit_jax.sweep import results, trial_record
from vit_jax.sweep.sweep_file import Trial

KEYS = ["optim.weight_decay", "data.name"]
TRIALS = [Trial("a", {"optim.weight_decay": 0.0, "data.name": "x"}),
          Trial("b", {"optim.weight_decay": 0.1, "data.name": "x"}),
          Trial("c", {"optim.weight_decay": 0.3, "data.name": "y"})]


def write_trial(root, name, status, rows, **record):
  directory = root / name
  directory.mkdir()
  trial_record.write(str(directory), {"status": status, "wall_seconds": 12.34, **record})
  (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  write_trial(root, "a", "finished", [
      {"step": 10, "loss": 0.1, "accuracy": 0.99},  # a train row: not an evaluation
      {"step": 10, "test_accuracy": 0.9, "test_loss": 0.4, "test_examples": 359.0},
      {"step": 20, "test_accuracy": 0.8, "test_loss": 0.3, "test_examples": 359.0},
      {"step": 20, "fewshot_1shot_accuracy": 0.5}])
  write_trial(root, "b", "failed", [{"step": 10, "test_accuracy": 0.7, "test_loss": 0.6}],
              error_tail=["Traceback (most recent call last):", "ValueError: bad | value"])
  (root / "b" / "metrics.jsonl").open("a").write('{"step": 20, "test_acc')  # a torn last line
  return root  # trial c has not started


def test_final_is_the_last_value_and_best_the_highest_accuracy_or_lowest_loss(sweep_dir):
  a, b, c = results.gather(TRIALS, str(sweep_dir), ["test", "fewshot"])
  assert a.final == {"test_accuracy": 0.8, "test_loss": 0.3, "fewshot_1shot_accuracy": 0.5}
  assert a.best == {"test_accuracy": 0.9, "test_loss": 0.3, "fewshot_1shot_accuracy": 0.5}
  assert (a.status, a.last_step, a.wall_seconds, a.error) == ("finished", 20, 12.34, "")
  assert (b.status, b.final, b.last_step, b.error) == (
      "failed", {"test_accuracy": 0.7, "test_loss": 0.6}, 10, "ValueError: bad | value")
  assert (c.status, c.final, c.last_step, c.wall_seconds) == ("pending", {}, None, None)


def test_only_the_named_evaluators_metrics_count(sweep_dir):
  a, _, _ = results.gather(TRIALS, str(sweep_dir), ["test"])
  assert set(a.final) == {"test_accuracy", "test_loss"}


def test_the_csv_has_one_row_per_trial_with_overrides_metrics_and_status(sweep_dir):
  gathered = results.gather(TRIALS, str(sweep_dir), ["test"])
  csv_path, md_path = results.write(str(sweep_dir), gathered, KEYS, title="Sweep s.py")
  rows = list(csv.DictReader(open(csv_path)))
  assert [row["trial"] for row in rows] == ["a", "b", "c"]
  assert rows[0] == {
      "trial": "a", "status": "finished", "optim.weight_decay": "0.0", "data.name": "x",
      "final_test_accuracy": "0.8", "best_test_accuracy": "0.9", "final_test_loss": "0.3",
      "best_test_loss": "0.3", "last_step": "20", "wall_seconds": "12.3", "error": ""}
  assert rows[1]["status"] == "failed" and rows[1]["error"] == "ValueError: bad | value"
  assert rows[2]["status"] == "pending" and rows[2]["final_test_accuracy"] == ""


def test_the_markdown_table_has_a_row_per_trial_and_counts_the_statuses(sweep_dir):
  gathered = results.gather(TRIALS, str(sweep_dir), ["test"])
  text = results.markdown_text(gathered, KEYS, title="Sweep s.py")
  lines = text.splitlines()
  assert lines[0] == "# Sweep s.py"
  assert "3 trials: 1 finished, 1 failed, 1 pending" in lines
  table = [line for line in lines if line.startswith("|")]
  assert len(table) == 2 + 3
  assert table[2] == "| a | finished | 0.0 | x | 0.8 | 0.9 | 0.3 | 0.3 | 20 | 12 |  |"
  assert table[3].endswith("| ValueError: bad \\| value |")  # a pipe in a cell is escaped
  assert all(line.count(" | ") == table[0].count(" | ") for line in table[2:])
