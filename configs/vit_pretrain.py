"""ViT pre-training as published: the ViT paper's runs (Table 3) and AugReg's ImageNet-21k runs.

The argument is '<dataset>:<model>'; every number is explained, with its source, in docs/recipes.md:

  python -m vit_jax.main --config=configs/vit_pretrain.py:i21k:B/16 --workdir=DIR \
      --config.data.data_dir=/path/to/tensorflow_datasets          # ImageNet-21k
  python -m vit_jax.main --config=configs/vit_pretrain.py:jft:L/16 --workdir=DIR \
      --config.data.root=/path/to/jft_like_tfrecords                # JFT-like multi-label data
  python -m vit_jax.main --config=configs/vit_pretrain.py:i1k:B/16 --workdir=DIR   # ImageNet-1k row
  python -m vit_jax.main --config=configs/vit_pretrain.py:augreg_i21k:B/16 --workdir=DIR \
      --config.data.data_dir=/path/to/tensorflow_datasets          # docs/recipes.md#augreg
  python -m vit_jax.sweep --config=configs/vit_pretrain.py:augreg_i21k:B/16 --workdir=DIR

Datasets: 'i21k' (ViT paper, ImageNet-21k: B/16, B/32, L/16, L/32), 'jft' (ViT paper, JFT-300M, here any
JFT-like TFRecord source: B/16, B/32, L/16, L/32, H/14), 'i1k' (ViT paper, ImageNet-1k from scratch:
B/16, B/32, L/16, L/32) and 'augreg_i21k' (Steiner et al. 2021, ImageNet-21k for 300 epochs: Ti/16,
S/16, S/32, B/8, B/16, B/32, L/16, each with the augmentation, weight decay and regularization of its
recommended checkpoint). get_sweep('augreg_i21k:<model>') is AugReg's grid at 300 epochs.

Not represented: AugReg's 30-epoch runs (set --config.train.epochs=30.0) and hybrid models, the ViT
paper's ImageNet-21k H/14 (Table 3 has no row for it), big_vision's bfloat16 Adam moments (set
--config.optim.mu_dtype=bfloat16 to match them).
"""
import ml_collections

from vit_jax.configuration import base_config
from vit_jax.sweep.space import axis, product, zipped

BATCH_SIZE = 4096           # every run of ViT Table 3 and of AugReg
WARMUP_STEPS = 10_000       # ditto
IMAGE_SIZE = 224            # ditto
# docs/checkpoint_format.md#model-family
HIDDEN_SIZE = {"Ti": 192, "S": 384, "B": 768, "L": 1024, "H": 1280}
# Encoders of 24 layers and more (L: 24, H: 32) train scanned: one compiled block instead of one per
# layer. Time to the first step on one CPU device: L/16 24 s scanned vs 56 s unrolled, H/14 16 s vs
# 82 s; B/16 (12 layers) only 20 s vs 30 s (experiments/README.md "## Overheads around the step").
SCANNED = ("L", "H")
# ImageNet-21k as README "## Data" prepares it; the first 102,400 images are held out for evaluation.
I21K_DATA = dict(source="tfds", name="imagenet21k", train_split="train[102400:]",
                 test_split="train[:102400]")

# ViT paper, Table 3 (docs/recipes.md#vit-pretraining): model -> (epochs, peak lr).
# Weight decay and dropout are per dataset: JFT 0.1 / 0.0, ImageNet-21k 0.03 / 0.1, ImageNet 0.3 / 0.1.
JFT = {"B/16": (7.0, 8e-4), "B/32": (7.0, 8e-4), "L/32": (7.0, 6e-4),
       "L/16": (14.0, 4e-4),   # Table 3: 7 or 14 epochs; 14 is the longer run of Table 6
       "H/14": (14.0, 3e-4)}
I21K = {"B/16": (90.0, 1e-3), "B/32": (90.0, 1e-3),
        "L/16": (90.0, 1e-3), "L/32": (90.0, 1e-3)}  # L: Table 3 says 30/90; the released ones ran 90
I1K = {"B/16": (300.0, 3e-3), "B/32": (300.0, 3e-3), "L/16": (300.0, 3e-3), "L/32": (300.0, 3e-3)}
VIT_PAPER = {  # dataset -> (epochs and lr per model, weight decay, dropout, decay, clip norm)
    "jft": (JFT, 0.1, 0.0, "linear", 0.0),
    "i21k": (I21K, 0.03, 0.1, "linear", 0.0),
    "i1k": (I1K, 0.3, 0.1, "cosine", 1.0),  # Table 3's caption: clipping at norm 1 for ImageNet only
}

# AugReg's augmentation levels as big_vision's configs/vit_i21k.py writes them
# (docs/recipes.md#augreg-levels): level -> (RandAugment layers and magnitude or None, mixup alpha).
AUGREG_LEVELS = {
    "none": (None, 0.0), "light1": ((2, 0), 0.0), "light2": ((2, 10), 0.2),
    "medium1": ((2, 15), 0.2), "medium2": ((2, 15), 0.5),
    "strong1": ((2, 20), 0.5), "strong2": ((2, 20), 0.8),
}
# The recommended ImageNet-21k checkpoint of each model (best upstream validation accuracy, 300
# epochs; file names in the vision_transformer README, B/8 in big_vision's list):
# model -> (augmentation level, weight decay, dropout = stochastic depth).
AUGREG = {
    "Ti/16": ("none", 0.03, 0.0), "S/16": ("light1", 0.03, 0.0), "S/32": ("none", 0.1, 0.0),
    "B/8": ("medium2", 0.1, 0.0), "B/16": ("medium1", 0.1, 0.0), "B/32": ("light1", 0.1, 0.0),
    "L/16": ("strong1", 0.1, 0.0),
}
AUGREG_WEIGHT_DECAYS = (0.1, 0.03)    # the grid: every level x both weight decays x both regularizations
AUGREG_REGULARIZATION = (0.0, 0.1)    # dropout and stochastic depth together
DATASETS = {"jft": JFT, "i21k": I21K, "i1k": I1K, "augreg_i21k": AUGREG}


def _parse(arg: str) -> tuple[str, str]:
  dataset, _, model = arg.partition(":")
  if dataset not in DATASETS or model not in DATASETS[dataset]:
    choices = "; ".join(f"{name}:{'|'.join(models)}" for name, models in DATASETS.items())
    raise ValueError(f"configs/vit_pretrain.py takes '<dataset>:<model>', one of {choices}; "
                     f"got {arg!r}")
  return dataset, model


def augreg_pipeline(level: str) -> tuple[str, str]:
  """(pp_train, pp_batch) of an AugReg augmentation level: inception crop and flip, then RandAugment,
  and mixup on one-hot targets."""
  randaug, mixup = AUGREG_LEVELS[level]
  ops = [f"decode_jpeg_and_inception_crop({IMAGE_SIZE})", "flip_lr"]
  if randaug:
    ops.append(f"randaug{randaug}")
  ops.append("value_range(-1, 1)")
  if mixup:
    ops.append("onehot")  # mixup mixes float targets; without it the int labels are enough
  return "|".join(ops), f"mixup({mixup})" if mixup else ""


def _common(model: str) -> ml_collections.ConfigDict:
  """What every run shares: batch 4096, Adam(0.9, 0.999), 10k warmup steps, 224 px; L and H scanned."""
  config = base_config(f"ViT-{model}")
  if model.split("/")[0] in SCANNED:
    config.model.scan_layers = True
  config.data.image_size = IMAGE_SIZE
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = 1024
  config.evals.test.every = 10_000
  config.train.checkpoint_every = 2000
  # The paper's "Adam with weight decay" decays decoupled and scaled by the learning rate
  # (flax.optim.Adam's weight_decay [recalled]), which is our adamw (docs/recipes.md#weight-decay).
  config.optim.name = "adamw"
  config.optim.b1, config.optim.b2 = 0.9, 0.999
  config.optim.warmup_steps = WARMUP_STEPS
  return config


def _vit_paper(dataset: str, model: str) -> ml_collections.ConfigDict:
  per_model, weight_decay, dropout, decay, clip = VIT_PAPER[dataset]
  epochs, learning_rate = per_model[model]
  config = _common(model)
  if dataset == "jft":
    config.data.source = "jft"    # set --config.data.root (README "## Data")
    config.loss = "sigmoid_xent"  # multi-label
  elif dataset == "i21k":
    config.data.update(I21K_DATA)
    config.loss = "sigmoid_xent"  # vision_transformer issue #34
  else:
    config.data.update(source="tfds", name="imagenet2012", train_split="train",
                       test_split="validation")
  config.train.epochs = epochs
  config.model.dropout_rate = dropout
  # Pre-training head: one hidden layer of the model's width (paper Sec. 3.1; issue #124), and the
  # class bias starting at -10 (issue #2), docs/checkpoint_format.md#pretraining-settings.
  config.model.representation_size = HIDDEN_SIZE[model.split("/")[0]]
  config.model.head_bias_init = -10.0
  config.optim.learning_rate = learning_rate
  config.optim.decay = decay
  # Linear decay ends at 1e-5 in the released ImageNet-21k runs (issue #2); assumed for JFT too.
  config.optim.end_learning_rate = 1e-5 if decay == "linear" else 0.0
  config.optim.weight_decay = weight_decay
  config.optim.grad_clip_norm = clip
  return config


def _augreg(model: str) -> ml_collections.ConfigDict:
  level, weight_decay, regularization = AUGREG[model]
  config = _common(model)
  config.data.update(I21K_DATA)
  config.data.pp_train, config.data.pp_batch = augreg_pipeline(level)
  config.data.pp_eval = f"decode|resize_small(256)|central_crop({IMAGE_SIZE})|value_range(-1, 1)"
  config.loss = "sigmoid_xent"
  config.train.epochs = 300.0
  config.model.dropout_rate = regularization
  config.model.stochastic_depth = regularization
  config.model.head_bias_init = -10.0
  config.optim.learning_rate = 1e-3
  config.optim.decay = "cosine"
  config.optim.weight_decay = weight_decay
  config.optim.grad_clip_norm = 1.0
  return config


def get_config(arg: str = "i21k:B/16") -> ml_collections.ConfigDict:
  """The locked config of '<dataset>:<model>', e.g. 'i21k:B/16', 'jft:H/14', 'augreg_i21k:S/16'."""
  dataset, model = _parse(arg)
  config = _augreg(model) if dataset == "augreg_i21k" else _vit_paper(dataset, model)
  return config.lock()


def get_sweep(arg: str = "augreg_i21k:B/16") -> list[dict]:
  """AugReg's grid for one model: 7 augmentation levels x 2 weight decays x 2 regularizations."""
  dataset, _ = _parse(arg)
  if dataset != "augreg_i21k":
    raise ValueError(f"the ViT paper publishes no pre-training sweep for {dataset!r}; only "
                     "'augreg_i21k:<model>' has one (docs/recipes.md#augreg)")
  pipelines = [augreg_pipeline(level) for level in AUGREG_LEVELS]
  augmentation = zipped(axis("data.pp_train", [train for train, _ in pipelines]),
                        axis("data.pp_batch", [batch for _, batch in pipelines]))
  regularization = zipped(axis("model.dropout_rate", AUGREG_REGULARIZATION),
                          axis("model.stochastic_depth", AUGREG_REGULARIZATION))
  return product(augmentation, axis("optim.weight_decay", AUGREG_WEIGHT_DECAYS), regularization)
