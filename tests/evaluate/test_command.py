"""Specification of `python -m vit_jax.evaluate` on a stand-in run: a workdir holding a ViT-micro/4
state for the digits at 16 px (random weights: nothing is trained), its config.json and class names.

Every test example is counted once, however the 359 of them fall into padded batches on 8 devices:
the per-class examples, the confusion matrix and the examples counted all add up to the split's size,
and agree with each other (the diagonal over the rows is the per-class accuracy, its trace over the
examples the top-1 accuracy). The figure is a PNG of the documented size; ReaL and few-shot results
are added when asked."""
import json

import matplotlib.image
import numpy as np
import pytest

from vit_jax import run_files
from vit_jax.data import sources
from vit_jax.evaluate import command, plots, report
from vit_jax.train.loop import save_config

from ..states import digits_config, save_stand_in_run

TEST_EXAMPLES = 359


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  config = digits_config()
  source = sources.get_source(config.data)
  workdir = save_stand_in_run(config, tmp_path_factory.mktemp("run"), source=source)
  save_config(config, str(workdir))
  run_files.write_class_names(str(workdir), source.class_names())
  labels = [int(example["label"]) for example in source.read("test").as_numpy_iterator()]
  real = workdir / "real.json"  # every other example without labels; the others: their label
  real.write_text(json.dumps([[label] if i % 2 else [] for i, label in enumerate(labels)]))
  written, metrics, lines = command.run(config, str(workdir), real_labels_file=str(real),
                                        fewshot_shots=(1, 2), fewshot_seeds=1,
                                        fewshot_train_split="train[:100]")
  return workdir, written, metrics, lines, np.array(labels)


def test_every_test_example_is_counted_once_in_every_figure(evaluated):
  workdir, written, metrics, _, labels = evaluated
  output = workdir / "eval" / "test"  # the default: beside the run
  assert written == [str(output / report.METRICS), str(output / plots.CONFUSION_MATRIX)]
  saved = json.loads((output / report.METRICS).read_text())
  assert saved == json.loads(json.dumps({**metrics, "files": [plots.CONFUSION_MATRIX]}))
  assert saved["examples"] == TEST_EXAMPLES and saved["skipped"] == 0
  per_class = saved["per_class"]
  assert [c["examples"] for c in per_class] == list(np.bincount(labels, minlength=10))
  assert [c["name"] for c in per_class] == [str(i) for i in range(10)]
  confusion = np.array(saved["confusion_matrix"])
  assert confusion.shape == (10, 10) and confusion.sum() == TEST_EXAMPLES
  np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=10))
  np.testing.assert_allclose([c["accuracy"] for c in per_class], np.diag(confusion) / confusion.sum(1))
  assert saved["accuracy"] == pytest.approx(np.trace(confusion) / TEST_EXAMPLES)
  assert 0.0 <= saved["accuracy"] <= saved["top5_accuracy"] <= 1.0 and saved["loss"] > 0


def test_the_confusion_matrix_is_a_png_of_the_documented_size(evaluated):
  path = evaluated[0] / "eval" / "test" / plots.CONFUSION_MATRIX
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert matplotlib.image.imread(path).shape == plots.figure_pixels(10) + (4,)


def test_real_and_fewshot_results_are_added_when_asked(evaluated):
  _, _, metrics, lines, labels = evaluated
  real = metrics["real"]
  assert real["examples"] == 179 and real["without_labels"] == 180  # the odd positions have labels
  assert real["by"] == "position" and 0.0 <= real["accuracy"] <= 1.0
  fewshot = metrics["fewshot"]
  assert fewshot["train_split"] == "train[:100]" and sorted(fewshot["accuracy"]) == ["1shot", "2shot"]
  assert all(len(per_seed) == 1 for per_seed in fewshot["per_seed"].values())
  assert lines[0].startswith(f"ViT-micro/4 on digits split 'test': {TEST_EXAMPLES} examples, top-1 ")
  assert any(line.startswith("ReaL accuracy") for line in lines)
  assert any(line.startswith("few-shot (1 seeds, shots from 'train[:100]'): 1-shot") for line in lines)


def test_a_checkpoint_outside_a_run_needs_an_output_directory(tmp_path):
  with pytest.raises(ValueError, match=r"vit.npz is not inside a training workdir: give --output=DIR"):
    command.run(digits_config(), str(tmp_path / "vit.npz"))
