"""Specification of reading a run's metrics.jsonl back: every row, in order, a torn line ignored."""
from vit_jax.train import metric_rows


def test_rows_come_back_in_order_and_a_line_cut_short_by_a_kill_is_ignored(tmp_path):
  path = tmp_path / metric_rows.FILE
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 1, "test_accuracy": 0.5}\n{"step": 2, "lo')
  assert metric_rows.read(str(path)) == [{"step": 1, "loss": 2.0}, {"step": 1, "test_accuracy": 0.5}]


def test_a_run_without_metrics_has_no_rows(tmp_path):
  assert metric_rows.read(str(tmp_path / metric_rows.FILE)) == []
