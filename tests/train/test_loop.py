"""Specification of the trainer loop: metrics files, checkpoints, exact resume, fine-tuning from a run."""
import importlib.util
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax.train.loop import train_and_evaluate

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def default_config(stage, **train):
  spec = importlib.util.spec_from_file_location("default_config", CONFIGS / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(stage)
  config.model_name = "ViT-micro/4"
  config.batch_size = 32
  config.eval_batch_size = 128
  config.train.epochs = 0.0
  config.train.update(train)
  config.optim.warmup_steps = 1
  return config


@pytest.fixture(scope="module")
def six_step_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  result = train_and_evaluate(default_config("pretrain", steps=6, log_every=2, checkpoint_every=3),
                              str(workdir))
  return workdir, result


def final_params(workdir):
  return checkpoint.restore_params(workdir)


def test_run_writes_metrics_checkpoints_and_tensorboard(six_step_run):
  workdir, result = six_step_run
  assert result["step"] == 6 and 0.0 <= result["test_accuracy"] <= 1.0
  assert result["test_examples"] == 359  # every test example exactly once
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  train = [r for r in records if "loss" in r]
  assert [r["step"] for r in train] == [2, 4, 6]
  for key in ("loss", "accuracy", "learning_rate", "grad_norm", "images_per_sec", "mfu"):
    assert all(np.isfinite(r[key]) for r in train), key
  assert all(0 < r["mfu"] < 1 for r in train)
  assert any("test_accuracy" in r for r in records)
  assert os.listdir(workdir / "tensorboard")
  assert checkpoint.Checkpointer(workdir / "checkpoints").all_steps() == [3, 6]


def test_the_workdir_keeps_the_resolved_config_and_the_class_names(six_step_run):
  workdir, _ = six_step_run
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model_name"] == "ViT-micro/4" and saved["train"]["steps"] == 6
  assert saved["evals"]["test"]["type"] == "classification"
  assert json.loads((workdir / "class_names.json").read_text()) == [str(i) for i in range(10)]


def test_restart_continues_from_the_saved_step_to_the_same_result(six_step_run, tmp_path, capsys):
  straight, _ = six_step_run
  interrupted = tmp_path / "interrupted"
  shutil.copytree(straight, interrupted)
  shutil.rmtree(interrupted / "checkpoints" / "6")  # as if the job died after step 3 was saved
  result = train_and_evaluate(default_config("pretrain", steps=6, log_every=2, checkpoint_every=3),
                              str(interrupted))
  assert "resuming from step 3 of 6" in capsys.readouterr().out
  assert result["step"] == 6
  jax.tree.map(np.testing.assert_array_equal, final_params(straight), final_params(interrupted))
  # The rows of steps 4-6 written before the "crash" were dropped and written again, once.
  assert metric_rows(interrupted) == metric_rows(straight)


def metric_rows(workdir):
  """(step, metric names) of every metrics.jsonl row, in order."""
  return [(r["step"], sorted(r)) for r in map(json.loads, open(workdir / "metrics.jsonl"))]


def test_finished_run_restarted_does_not_train_again_nor_log_twice(six_step_run, capsys):
  workdir, first = six_step_run
  rows = metric_rows(workdir)
  again = train_and_evaluate(default_config("pretrain", steps=6, log_every=2, checkpoint_every=3),
                             str(workdir))
  assert "resuming from step 6 of 6 " in capsys.readouterr().out
  assert again["step"] == 6 and again["test_accuracy"] == pytest.approx(first["test_accuracy"])
  assert metric_rows(workdir) == rows


def test_evaluators_run_on_their_cadence_and_compile_their_step_once(tmp_path):
  """Three eval passes (steps 2 and 4, and the final one at 6), each on the raw and the EMA weights,
  share one compiled eval step; each entry of config.evals logs its metrics under its own name."""
  config = default_config("pretrain", steps=6, log_every=3, checkpoint_every=6)
  config.evals.test.every = 2
  config.optim.ema_decay = 0.5
  compiles = []

  def listener(event, duration, fun_name="", **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration" and "eval_step" in fun_name:
      compiles.append(fun_name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    result = train_and_evaluate(config, str(tmp_path))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert len(compiles) == 1
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows if "test_accuracy" in r] == [2, 4, 6]
  assert {"test_accuracy", "test_top5_accuracy", "test_loss", "test_examples"} <= set(result)
  assert result["test_top5_accuracy"] >= result["test_accuracy"]
  assert [r["step"] for r in rows if "test_ema_accuracy" in r] == [2, 4, 6]
  assert result["test_ema_examples"] == result["test_examples"] == 359


def test_finetune_from_a_workdir_resizes_position_embeddings_as_init_posemb_says(six_step_run,
                                                                                tmp_path):
  pretrained, _ = six_step_run
  config = default_config("finetune", steps=2, log_every=1, checkpoint_every=2)
  config.init_from = str(pretrained)
  config.init_posemb = "interpolate_1d"  # not the default: the key reaches the loader
  result = train_and_evaluate(config, str(tmp_path / "ft"))
  assert result["step"] == 2
  report = (tmp_path / "ft" / "init_report.txt").read_text()
  assert ("resized  Transformer/posembed_input/pos_embedding  (1, 17, 32) -> (1, 65, 32)  "
          "(interpolate_1d: 16 rows linearly to 64, as one sequence, grid ignored)") in report
  assert "reset    head/kernel" in report
  params = final_params(tmp_path / "ft")
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 65, 32)


def test_multi_label_data_trains_with_sigmoid_and_reports_ranking_metrics(tmp_path):
  """JFT-like shards: multi-hot targets, and precision@1 / mAP over every test example."""
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from vit_jax.data import jft  # pylint: disable=import-outside-toplevel

  def png(i):
    out = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), (i * 37) % 256, np.uint8)).save(out, "PNG")
    return out.getvalue()

  for split, count in (("train", 64), ("test", 20)):
    jft.write_split(str(tmp_path / "jft"), split,
                    [(f"{split}{i}", png(i), [i % 4, (i + 1) % 4][:1 + i % 2]) for i in range(count)],
                    num_classes=4, num_shards=2)
  config = default_config("pretrain", steps=3, log_every=1, checkpoint_every=3)
  config.data.source = "jft"
  config.data.root = str(tmp_path / "jft")
  config.data.pp_train = config.data.pp_batch = ""  # The digits' whole-batch recipe: back to default.
  result = train_and_evaluate(config, str(tmp_path / "run"))
  assert result["test_examples"] == 20
  assert 0.0 <= result["test_precision_at_1"] <= 1.0
  assert 0.0 < result["test_mean_average_precision"] <= 1.0
