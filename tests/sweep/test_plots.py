"""Specification of the sweep's plots: a PNG per (evaluation metric, varying key) of the finished
trials' final metric against the key, a line per combination of the other varying keys."""
import matplotlib.image

from vit_jax.sweep import plots
from vit_jax.sweep.results import TrialResult


def result(lr, data, accuracy, status="finished"):
  final = {"test_accuracy": accuracy, "test_loss": 1 - accuracy}
  return TrialResult(f"lr={lr},name={data}", {"optim.learning_rate": lr, "data.name": data},
                     status, final, final, 10, 1.0, "")


RESULTS = [result(1e-4, "cifar10", 0.5), result(1e-3, "cifar10", 0.7), result(1e-2, "cifar10", 0.6),
           result(1e-4, "pets", 0.4), result(1e-3, "pets", 0.8), result(1e-2, "pets", 0.1, "failed")]
KEYS = ["optim.learning_rate", "data.name"]


def test_one_png_per_metric_and_varying_key(tmp_path):
  written = plots.write(str(tmp_path), RESULTS, KEYS)
  assert sorted(p.split("/")[-1] for p in written) == sorted(
      plots.file_name(m, k) for m in ("test_accuracy", "test_loss") for k in KEYS)
  assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
      p.split("/")[-1] for p in written)
  image = matplotlib.image.imread(written[0])
  assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_numbers_on_a_numeric_axis_one_line_per_other_value_failed_trials_left_out():
  finished = [r for r in RESULTS if r.status == "finished"]
  axes = plots.metric_figure(finished, "test_accuracy", "optim.learning_rate", ["data.name"]).axes[0]
  lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.lines}
  assert lines == {"name=cifar10": ([1e-4, 1e-3, 1e-2], [0.5, 0.7, 0.6]),
                   "name=pets": ([1e-4, 1e-3], [0.4, 0.8])}
  assert axes.get_xscale() == "log"  # positive values spanning 100x


def test_strings_on_a_categorical_axis():
  finished = [r for r in RESULTS if r.status == "finished"]
  axes = plots.metric_figure(finished, "test_accuracy", "data.name", ["optim.learning_rate"]).axes[0]
  assert [t.get_text() for t in axes.get_xticklabels()] == ["cifar10", "pets"]
  lines = {line.get_label(): list(line.get_ydata()) for line in axes.lines}
  assert lines == {"learning_rate=0.0001": [0.5, 0.4], "learning_rate=0.001": [0.7, 0.8],
                   "learning_rate=0.01": [0.6]}
