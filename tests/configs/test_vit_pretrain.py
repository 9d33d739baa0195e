"""Specification of configs/vit_pretrain.py: the ViT paper's Table 3 and AugReg's ImageNet-21k runs,
value by value as docs/recipes.md gives them, each config valid for the trainer."""
import importlib.util
import pathlib

import pytest

from vit_jax.configuration import check_values, total_steps
from vit_jax.sweep import sweep_file

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "vit_pretrain.py"


def load_module():
  spec = importlib.util.spec_from_file_location("vit_pretrain_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


RECIPES = load_module()

# ViT paper, Table 3: (dataset, model) -> (epochs, peak lr, weight decay, dropout, decay, clip norm).
TABLE_3 = {
    ("jft", "B/16"): (7, 8e-4, 0.1, 0.0, "linear", 0.0),
    ("jft", "B/32"): (7, 8e-4, 0.1, 0.0, "linear", 0.0),
    ("jft", "L/32"): (7, 6e-4, 0.1, 0.0, "linear", 0.0),
    ("jft", "L/16"): (14, 4e-4, 0.1, 0.0, "linear", 0.0),
    ("jft", "H/14"): (14, 3e-4, 0.1, 0.0, "linear", 0.0),
    ("i21k", "B/16"): (90, 1e-3, 0.03, 0.1, "linear", 0.0),
    ("i21k", "B/32"): (90, 1e-3, 0.03, 0.1, "linear", 0.0),
    ("i21k", "L/16"): (90, 1e-3, 0.03, 0.1, "linear", 0.0),
    ("i21k", "L/32"): (90, 1e-3, 0.03, 0.1, "linear", 0.0),
    ("i1k", "B/16"): (300, 3e-3, 0.3, 0.1, "cosine", 1.0),
    ("i1k", "B/32"): (300, 3e-3, 0.3, 0.1, "cosine", 1.0),
    ("i1k", "L/16"): (300, 3e-3, 0.3, 0.1, "cosine", 1.0),
    ("i1k", "L/32"): (300, 3e-3, 0.3, 0.1, "cosine", 1.0),
}
WIDTH = {"B": 768, "L": 1024, "H": 1280}

# AugReg's recommended ImageNet-21k checkpoints (300 epochs, lr 0.001):
# model -> (aug level, weight decay, dropout and stochastic depth), from their file names.
RECOMMENDED = {
    "Ti/16": ("none", 0.03, 0.0), "S/16": ("light1", 0.03, 0.0), "S/32": ("none", 0.1, 0.0),
    "B/8": ("medium2", 0.1, 0.0), "B/16": ("medium1", 0.1, 0.0), "B/32": ("light1", 0.1, 0.0),
    "L/16": ("strong1", 0.1, 0.0),
}
CROP_FLIP = "decode_jpeg_and_inception_crop(224)|flip_lr|"
# AugReg's levels: RandAugment (layers, magnitude) and mixup alpha, as pipelines.
LEVELS = {
    "none": (CROP_FLIP + "value_range(-1, 1)", ""),
    "light1": (CROP_FLIP + "randaug(2, 0)|value_range(-1, 1)", ""),
    "light2": (CROP_FLIP + "randaug(2, 10)|value_range(-1, 1)|onehot", "mixup(0.2)"),
    "medium1": (CROP_FLIP + "randaug(2, 15)|value_range(-1, 1)|onehot", "mixup(0.2)"),
    "medium2": (CROP_FLIP + "randaug(2, 15)|value_range(-1, 1)|onehot", "mixup(0.5)"),
    "strong1": (CROP_FLIP + "randaug(2, 20)|value_range(-1, 1)|onehot", "mixup(0.5)"),
    "strong2": (CROP_FLIP + "randaug(2, 20)|value_range(-1, 1)|onehot", "mixup(0.8)"),
}


def assert_shared_by_every_run(config):
  assert config.is_locked and config.data.image_size == 224 and config.batch_size == 4096
  assert (config.optim.name, config.optim.b1, config.optim.b2) == ("adamw", 0.9, 0.999)
  assert config.optim.warmup_steps == 10_000
  check_values(config)  # the trainer's own validation


@pytest.mark.parametrize("dataset, model", sorted(TABLE_3))
def test_vit_paper_runs_carry_table_3(dataset, model):
  epochs, learning_rate, weight_decay, dropout, decay, clip = TABLE_3[(dataset, model)]
  config = RECIPES.get_config(f"{dataset}:{model}")
  assert_shared_by_every_run(config)
  assert config.model_name == f"ViT-{model}" and config.train.epochs == epochs
  assert (config.optim.learning_rate, config.optim.weight_decay, config.optim.decay,
          config.optim.grad_clip_norm) == (learning_rate, weight_decay, decay, clip)
  assert config.model.dropout_rate == dropout and not config.model.stochastic_depth
  # The pre-training head: a hidden layer of the model's width, class biases from -10.
  assert config.model.representation_size == WIDTH[model[0]]
  assert config.model.head_bias_init == -10.0
  assert config.optim.end_learning_rate == (1e-5 if decay == "linear" else 0.0)


def test_vit_paper_runs_read_their_data():
  i21k, jft, i1k = (RECIPES.get_config(f"{name}:B/16") for name in ("i21k", "jft", "i1k"))
  assert (i21k.data.source, i21k.data.name, i21k.loss) == ("tfds", "imagenet21k", "sigmoid_xent")
  assert (i21k.data.train_split, i21k.data.test_split) == ("train[102400:]", "train[:102400]")
  assert (jft.data.source, jft.loss) == ("jft", "sigmoid_xent")
  assert (i1k.data.name, i1k.data.test_split, i1k.loss) == ("imagenet2012", "validation", "auto")
  assert total_steps(i1k, 1_281_167) == 93_836  # 300 epochs of ImageNet at 4096 a step


@pytest.mark.parametrize("model", sorted(RECOMMENDED))
def test_augreg_runs_are_the_recommended_checkpoints(model):
  level, weight_decay, regularization = RECOMMENDED[model]
  config = RECIPES.get_config(f"augreg_i21k:{model}")
  assert_shared_by_every_run(config)
  assert config.model_name == f"ViT-{model}" and config.train.epochs == 300
  assert (config.optim.learning_rate, config.optim.decay, config.optim.grad_clip_norm) == (
      1e-3, "cosine", 1.0)
  assert config.optim.weight_decay == weight_decay
  assert config.model.dropout_rate == config.model.stochastic_depth == regularization
  assert (config.data.pp_train, config.data.pp_batch) == LEVELS[level]
  assert (config.data.name, config.loss, config.model.head_bias_init) == (
      "imagenet21k", "sigmoid_xent", -10.0)
  assert config.model.representation_size is None  # AugReg checkpoints have no pre-logits layer


def test_augreg_sweep_is_every_level_weight_decay_and_regularization():
  sweep = sweep_file.load(f"{CONFIG}:augreg_i21k:S/16")  # the runner's own checks of every trial
  trials = [trial.overrides for trial in sweep.trials]
  assert len(trials) == 7 * 2 * 2
  assert {(t["data.pp_train"], t["data.pp_batch"]) for t in trials} == set(LEVELS.values())
  assert {t["optim.weight_decay"] for t in trials} == {0.1, 0.03}
  assert {(t["model.dropout_rate"], t["model.stochastic_depth"]) for t in trials} == {
      (0.0, 0.0), (0.1, 0.1)}


@pytest.mark.parametrize("arg", [f"{d}:{m}" for d, m in sorted(TABLE_3)] + [
    f"augreg_i21k:{m}" for m in sorted(RECOMMENDED)])
def test_encoders_of_24_layers_and_more_train_scanned(arg):
  """Scanned layers compile in a fraction of the time where the encoder is deep (L: 24 layers, H:
  32); the 12-layer models keep the model's default, unrolled."""
  config = RECIPES.get_config(arg)
  deep = config.model_name.split("-")[1][0] in "LH"
  assert config.model.scan_layers is (True if deep else None)


def test_bad_arguments_name_the_choices():
  with pytest.raises(ValueError, match="augreg_i21k:Ti/16"):
    RECIPES.get_config("i21k:Ti/16")  # Table 3 has no ImageNet-21k Ti
  with pytest.raises(ValueError, match="only 'augreg_i21k:<model>' has one"):
    RECIPES.get_sweep("i21k:B/16")
