"""Specification of configs/vit_finetune.py: the ViT paper's fine-tuning (Table 4, App. B.1.1) and the
VTAB-1k tasks as docs/recipes.md gives them, each config valid for the trainer, each grid a sweep."""
import importlib.util
import pathlib

import pytest

from vit_jax.configuration import check_values
from vit_jax.sweep import sweep_file

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "vit_finetune.py"


def load_module():
  spec = importlib.util.spec_from_file_location("vit_finetune_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


RECIPES = load_module()
GRID = (0.001, 0.003, 0.01, 0.03)
# Table 4 and App. B.1.1: dataset -> (steps, learning-rate grid, train, test, development splits).
TABLE_4 = {
    "imagenet2012": (20_000, (0.003, 0.01, 0.03, 0.06), "train", "validation",
                     ("train[:99%]", "train[99%:]")),
    "cifar10": (10_000, GRID, "train", "test", ("train[:98%]", "train[98%:]")),
    "cifar100": (10_000, GRID, "train", "test", ("train[:98%]", "train[98%:]")),
    "oxford_iiit_pet": (500, GRID, "train", "test", ("train[:90%]", "train[90%:]")),
    "oxford_flowers102": (500, GRID, "train", "test", ("train[:90%]", "train[90%:]")),
}
# VTAB-1k as google-research/task_adaptation defines it: task -> (TFDS name, train800+val200, test,
# label feature); None for the tasks whose label is computed from other features.
VTAB = {
    "natural": {
        "caltech101": ("caltech101:3.*.*", "train[:800]+train[2754:2954]", "test", "label"),
        "cifar100": ("cifar100:3.*.*", "train[:800]+train[45000:45200]", "test", "label"),
        "dtd": ("dtd:3.*.*", "train[:800]+validation[:200]", "test", "label"),
        "oxford_flowers102": ("oxford_flowers102:2.*.*", "train[:800]+validation[:200]", "test",
                              "label"),
        "oxford_iiit_pet": ("oxford_iiit_pet:3.*.*", "train[:800]+train[2944:3144]", "test", "label"),
        "sun397": ("sun397/tfds:4.*.*", "train[:800]+validation[:200]", "test", "label"),
        "svhn": ("svhn_cropped:3.*.*", "train[:800]+train[65931:66131]", "test", "label"),
    },
    "specialized": {
        "patch_camelyon": ("patch_camelyon:2.*.*", "train[:800]+validation[:200]", "test", "label"),
        "eurosat": ("eurosat/rgb:2.*.*", "train[:800]+train[16200:16400]", "train[21600:]", "label"),
        "resisc45": ("resisc45:3.*.*", "train[:800]+train[18900:19100]", "train[25200:]", "label"),
        "diabetic_retinopathy": ("diabetic_retinopathy_detection/btgraham-300:3.*.*",
                                 "train[:800]+validation[:200]", "test", "label"),
    },
    "structured": {
        "clevr_count": None, "clevr_distance": None,
        "dmlab": ("dmlab:2.0.1", "train[:800]+validation[:200]", "test", "label"),
        "dsprites_location": None, "dsprites_orientation": None, "kitti_distance": None,
        "smallnorb_azimuth": ("smallnorb:2.*.*", "train[:800]+test[:200]", "test[50%:]",
                              "label_azimuth"),
        "smallnorb_elevation": ("smallnorb:2.*.*", "train[:800]+test[:200]", "test[50%:]",
                                "label_elevation"),
    },
}


def assert_shared_by_every_run(config):
  assert config.is_locked and config.data.source == "tfds" and config.data.image_size == 384
  assert config.batch_size == 512 and config.train.steps and not config.train.epochs
  assert (config.optim.name, config.optim.momentum, config.optim.nesterov) == ("sgd", 0.9, False)
  assert (config.optim.decay, config.optim.end_learning_rate) == ("cosine", 0.0)
  assert config.optim.weight_decay == 0.0 and config.optim.grad_clip_norm == 1.0
  assert config.init_from == "" and not config.model.dropout_rate
  check_values(config)  # the trainer's own validation


@pytest.mark.parametrize("dataset", sorted(TABLE_4))
def test_paper_datasets_carry_table_4(dataset):
  steps, grid, train, test, development = TABLE_4[dataset]
  config = RECIPES.get_config(f"{dataset}:B/16")
  assert_shared_by_every_run(config)
  assert (config.data.name, config.data.train_split, config.data.test_split) == (dataset, train, test)
  assert config.train.steps == steps and config.optim.learning_rate in grid
  assert config.optim.warmup_steps == (100 if steps == 500 else 500)  # the official code's
  assert (config.data.augment.crop, config.data.augment.area_min, config.data.augment.flip) == (
      "inception", 0.05, True)
  trials = RECIPES.get_sweep(f"{dataset}:B/16:/pretrained.npz")
  assert [trial["optim.learning_rate"] for trial in trials] == list(grid)
  assert {(trial["data.train_split"], trial["data.test_split"]) for trial in trials} == {development}


def test_every_model_fine_tunes_on_every_dataset():
  for model in ("Ti/16", "S/16", "S/32", "B/8", "B/16", "B/32", "L/16", "L/32", "H/14"):
    for dataset in (*TABLE_4, "vtab/dtd"):
      config = RECIPES.get_config(f"{dataset}:{model}")
      assert config.model_name == f"ViT-{model}"
      check_values(config)


def test_vtab_has_the_19_tasks_in_their_groups():
  assert {group: list(tasks) for group, tasks in RECIPES.VTAB_GROUPS.items()} == {
      group: list(tasks) for group, tasks in VTAB.items()}
  assert [len(tasks) for tasks in VTAB.values()] == [7, 4, 8]


@pytest.mark.parametrize("task", [t for tasks in VTAB.values() for t, spec in tasks.items() if spec])
def test_vtab_tasks_train_on_their_1000_examples_at_lr_0_01_for_2500_steps(task):
  name, train, test, label_key = next(tasks[task] for tasks in VTAB.values() if task in tasks)
  config = RECIPES.get_config(f"vtab/{task}:B/16")
  assert_shared_by_every_run(config)
  assert (config.data.name, config.data.train_split, config.data.test_split,
          config.data.label_key) == (name, train, test, label_key)
  assert (config.train.steps, config.optim.learning_rate) == (2500, 0.01)
  structured = task in VTAB["structured"]
  assert (config.data.augment.crop, config.data.augment.flip) == (
      ("resize", False) if structured else ("inception", True))
  train800, val200 = train.split("+")
  assert RECIPES.get_sweep(f"vtab/{task}:B/16:/p.npz") == [
      {"optim.learning_rate": 0.01, "data.train_split": train800, "data.test_split": val200}]


@pytest.mark.parametrize("task", [t for tasks in VTAB.values() for t, spec in tasks.items()
                                  if not spec])
def test_vtab_tasks_with_derived_labels_refuse_to_run_naming_what_is_missing(task):
  with pytest.raises(ValueError, match="derived label.*cannot derive it yet"):
    RECIPES.get_config(f"vtab/{task}:B/16")
  with pytest.raises(ValueError, match="derived label"):
    RECIPES.get_sweep(f"vtab/{task}:B/16:/p.npz")


def test_sweep_runs_the_grid_from_the_checkpoint_in_the_argument(tmp_path):
  sweep = sweep_file.load(f"{CONFIG}:cifar100:S/16:{tmp_path}")  # the runner's own checks
  assert sweep.config.init_from == str(tmp_path)
  assert [trial.overrides["optim.learning_rate"] for trial in sweep.trials] == list(GRID)
  assert sweep.varying_keys == ["optim.learning_rate"]
  with pytest.raises(ValueError, match="needs the pre-trained checkpoint"):
    RECIPES.get_sweep("cifar100:S/16")


def test_bad_arguments_name_the_choices():
  with pytest.raises(ValueError, match="imagenet2012, cifar10.*smallnorb_elevation.*H/14"):
    RECIPES.get_config("imagenet:B/16")
  with pytest.raises(ValueError, match="got 'cifar10:B/15'"):
    RECIPES.get_config("cifar10:B/15")
