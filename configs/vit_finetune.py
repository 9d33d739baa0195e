"""ViT fine-tuning as published (ViT paper App. B.1.1, Table 4), on its datasets and the VTAB-1k tasks.

The argument is '<dataset>:<model>[:<pre-trained checkpoint>]'; every number is explained, with its
source, in docs/recipes.md#vit-finetuning (VTAB: docs/recipes.md#vtab):

  python -m vit_jax.main --config=configs/vit_finetune.py:cifar10:B/16 --workdir=DIR \
      --config.init_from=PRETRAINED --config.data.data_dir=/path/to/tensorflow_datasets
  python -m vit_jax.sweep --config=configs/vit_finetune.py:cifar10:B/16:PRETRAINED --workdir=DIR

PRETRAINED is a workdir, an Orbax step or a public .npz (e.g. gs://vit_models/imagenet21k/ViT-B_16.npz);
the head is replaced by a zero-initialised one and the position embeddings are resized (README
"## Fine-tuning"). get_sweep runs the dataset's learning-rate grid on its development split (part of
the train split, as the paper chose its learning rates); get_config trains on the whole train split and
tests on the test split. Datasets: imagenet2012, cifar10, cifar100, oxford_iiit_pet, oxford_flowers102,
and 'vtab/<task>' for the 19 VTAB-1k tasks (VTAB_TASKS). Models: the ViT variants of MODELS.

All runs: SGD with momentum 0.9, batch 512, gradient clipping at global norm 1, cosine decay to 0, no
weight decay, 384 px (VTAB included: the paper fine-tunes every VTAB task at 384), the official code's
linear warmup and augmentation (inception crop of 5-100% of the area and a flip; evaluation resizes).

Not represented: the paper's Table 2 extras for ImageNet (512/518 px and Polyak averaging), BiT's
per-task VTAB preprocessing (not spelled out in the paper; structured tasks here resize without flips),
and the VTAB tasks whose label is derived from other features (Clevr, dSprites, KITTI): selecting one
is an error that names what the trainer lacks.
"""
import dataclasses

import ml_collections

from vit_jax.configuration import base_config
from vit_jax.sweep.space import axis, product

MODELS = ("Ti/16", "S/16", "S/32", "B/8", "B/16", "B/32", "L/16", "L/32", "H/14")
BATCH_SIZE = 512
IMAGE_SIZE = 384
PAPER_GRID = (0.001, 0.003, 0.01, 0.03)  # Table 4, all but ImageNet and VTAB


@dataclasses.dataclass(frozen=True)
class Task:
  """One fine-tuning dataset: where its examples are, how long and at which learning rates it trains."""
  name: str                  # TFDS name (with the version VTAB pins)
  train_split: str           # the final run's training examples
  test_split: str
  dev_train_split: str       # the learning-rate grid trains here ...
  dev_test_split: str        # ... and is scored here
  steps: int
  learning_rates: tuple      # the grid; the config uses the official code's default when it is in it
  warmup_steps: int = 500    # the official code's default (100 for its 500-step runs)
  label_key: str = "label"
  structured: bool = False   # labels are positions, counts or angles: no crop, no flip
  derived_label: str = ""    # why the trainer cannot train it yet (a label computed from features)


# ViT paper Table 4 and App. B.1.1: steps, learning-rate grid, development splits (1% of ImageNet's
# train split, 2% of CIFAR's, 10% of Pets' and Flowers').
PAPER_TASKS = {
    "imagenet2012": Task("imagenet2012", "train", "validation", "train[:99%]", "train[99%:]",
                         20_000, (0.003, 0.01, 0.03, 0.06)),
    "cifar10": Task("cifar10", "train", "test", "train[:98%]", "train[98%:]", 10_000, PAPER_GRID),
    "cifar100": Task("cifar100", "train", "test", "train[:98%]", "train[98%:]", 10_000, PAPER_GRID),
    "oxford_iiit_pet": Task("oxford_iiit_pet", "train", "test", "train[:90%]", "train[90%:]", 500,
                            PAPER_GRID, warmup_steps=100),
    # "The training set": TFDS's 'train' (1,020 images); 'train+validation' doubles it [our reading].
    "oxford_flowers102": Task("oxford_flowers102", "train", "test", "train[:90%]", "train[90%:]", 500,
                              PAPER_GRID, warmup_steps=100),
}


def _vtab(name, val200, test="test", *, first_train="train", label_key="label", structured=False,
          derived_label=""):
  """A VTAB-1k task as google-research/task_adaptation defines it: train800 = the first 800 train
  examples, val200 = 200 from its validation part; the final run trains on both (2,500 steps at lr
  0.01)."""
  train800 = f"{first_train}[:800]"
  return Task(name, f"{train800}+{val200}", test, train800, val200, 2500, (0.01,),
              label_key=label_key, structured=structured, derived_label=derived_label)


_CLEVR = dict(val200="train[63000:63200]", test="validation", structured=True)   # 90% of 70,000
_DSPRITES = dict(val200="train[589824:590024]", test="train[663552:]", structured=True)  # 80/10/10%
_SNORB = dict(val200="test[:200]", test="test[50%:]", structured=True)
# docs/recipes.md#vtab: group -> task -> Task. Offsets like train[2754:...] are task_adaptation's
# "P% of the TFDS train split" for the split sizes in the comments [recalled sizes: a build of
# another size moves them].
VTAB_GROUPS = {
    "natural": {
        "caltech101": _vtab("caltech101:3.*.*", "train[2754:2954]"),        # 90% of 3,060
        "cifar100": _vtab("cifar100:3.*.*", "train[45000:45200]"),          # 90% of 50,000
        "dtd": _vtab("dtd:3.*.*", "validation[:200]"),
        "oxford_flowers102": _vtab("oxford_flowers102:2.*.*", "validation[:200]"),
        "oxford_iiit_pet": _vtab("oxford_iiit_pet:3.*.*", "train[2944:3144]"),  # 80% of 3,680
        "sun397": _vtab("sun397/tfds:4.*.*", "validation[:200]"),
        "svhn": _vtab("svhn_cropped:3.*.*", "train[65931:66131]"),           # 90% of 73,257
    },
    "specialized": {
        "patch_camelyon": _vtab("patch_camelyon:2.*.*", "validation[:200]"),
        "eurosat": _vtab("eurosat/rgb:2.*.*", "train[16200:16400]", "train[21600:]"),  # 60/20/20%
        "resisc45": _vtab("resisc45:3.*.*", "train[18900:19100]", "train[25200:]"),    # of 31,500
        "diabetic_retinopathy": _vtab("diabetic_retinopathy_detection/btgraham-300:3.*.*",
                                      "validation[:200]"),
    },
    "structured": {
        "clevr_count": _vtab("clevr:3.*.*", **_CLEVR, derived_label=(
            "the number of objects minus 3 (8 classes), counted from the 'objects' feature")),
        "clevr_distance": _vtab("clevr:3.*.*", **_CLEVR, derived_label=(
            "the depth of the closest object binned at 8, 8.5, 9, 9.5 and 10 (6 classes), from "
            "'objects/pixel_coords'")),
        "dmlab": _vtab("dmlab:2.0.1", "validation[:200]", structured=True),
        "dsprites_location": _vtab("dsprites:2.*.*", **_DSPRITES, derived_label=(
            "'label_x_position' (32 values) in 16 bins, on 0/1 images scaled by 255")),
        "dsprites_orientation": _vtab("dsprites:2.*.*", **_DSPRITES, derived_label=(
            "'label_orientation' (40 values) in 16 bins, on 0/1 images scaled by 255")),
        "kitti_distance": _vtab("kitti:3.1.0", "validation[:200]", structured=True, derived_label=(
            "the depth of the closest car, van or truck binned at 8 m and 20 m, or none (4 classes), "
            "from the 'objects' feature")),
        "smallnorb_azimuth": _vtab("smallnorb:2.*.*", **_SNORB, label_key="label_azimuth"),
        "smallnorb_elevation": _vtab("smallnorb:2.*.*", **_SNORB, label_key="label_elevation"),
    },
}
VTAB_TASKS = {f"vtab/{task}": spec for group in VTAB_GROUPS.values() for task, spec in group.items()}
TASKS = {**PAPER_TASKS, **VTAB_TASKS}


def _parse(arg: str) -> tuple[str, Task, str, str]:
  """'<dataset>:<model>[:<checkpoint>]' -> (dataset, its Task, model, checkpoint or '')."""
  dataset, _, rest = arg.partition(":")
  model, _, init_from = rest.partition(":")
  if dataset not in TASKS or model not in MODELS:
    vtab = ", ".join(name[len("vtab/"):] for name in VTAB_TASKS)
    raise ValueError(f"configs/vit_finetune.py takes '<dataset>:<model>[:<checkpoint>]' with a "
                     f"dataset of {', '.join(PAPER_TASKS)} or vtab/<task> ({vtab}) and a model of "
                     f"{', '.join(MODELS)}; got {arg!r}")
  task = TASKS[dataset]
  if task.derived_label:
    raise ValueError(f"VTAB task {dataset!r} trains on a derived label, {task.derived_label}; the "
                     f"trainer reads a TFDS ClassLabel feature as it is (config.data.label_key) and "
                     "cannot derive it yet, so this task cannot run (docs/recipes.md#vtab)")
  return dataset, task, model, init_from


def _config(task: Task, model: str, init_from: str) -> ml_collections.ConfigDict:
  config = base_config(f"ViT-{model}")
  config.init_from = init_from
  config.data.update(source="tfds", name=task.name, label_key=task.label_key,
                     train_split=task.train_split, test_split=task.test_split, image_size=IMAGE_SIZE)
  if task.structured:
    config.data.augment.update(crop="resize", flip=False)
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = BATCH_SIZE
  config.train.steps = task.steps
  config.evals.test.every = task.steps // 10
  config.optim.name = "sgd"
  config.optim.momentum = 0.9
  config.optim.learning_rate = 0.03 if 0.03 in task.learning_rates else task.learning_rates[0]
  config.optim.warmup_steps = task.warmup_steps
  config.optim.decay = "cosine"
  config.optim.end_learning_rate = 0.0
  config.optim.weight_decay = 0.0
  config.optim.grad_clip_norm = 1.0
  return config


def get_config(arg: str = "cifar10:B/16") -> ml_collections.ConfigDict:
  """The locked config of e.g. 'cifar10:B/16', 'imagenet2012:L/16:/ckpt.npz', 'vtab/dtd:B/16'."""
  _, task, model, init_from = _parse(arg)
  return _config(task, model, init_from).lock()


def get_sweep(arg: str = "cifar10:B/16") -> list[dict]:
  """The dataset's learning-rate grid, each run on its development split."""
  _, task, _, init_from = _parse(arg)
  if not init_from:
    raise ValueError(f"a fine-tuning sweep needs the pre-trained checkpoint as the third part of the "
                     f"argument, e.g. configs/vit_finetune.py:{arg}:/path/to/pretrained.npz (a sweep "
                     "takes no --config.init_from)")
  development = [{"data.train_split": task.dev_train_split, "data.test_split": task.dev_test_split}]
  return product(axis("optim.learning_rate", task.learning_rates), development)
