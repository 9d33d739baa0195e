"""Inductive bias against data size on the digits: ViT, BiT and the hybrid trained from scratch on
10%, 25%, 50% and 100% of the train split (144, 360, 719 and 1,438 images), the same 60 epochs for
every size (the same budget per example), each evaluated on the whole test split (359 images).
12 trials.

  python -m vit_jax.sweep --config=configs/sweeps/data_size.py --workdir=workdir/experiments/data_size \\
      --parallel=2

The ViT paper (Dosovitskiy et al. 2021, Figures 3 and 4) finds that ResNets (BiT) beat ViTs when
pretrained on little data and that ViTs catch up and pass them as the data grows, with the hybrids
ahead at small sizes. Here each family is its small registered variant, trained as the default job
trains ViT-tiny/4 (AdamW at 3e-3, weight decay 0.05, inception crop at area >= 0.8, batch 128), at
an image size its architecture takes:

  ViT-tiny/4     139k params, 16 px: 4x4 patches of 4x4 px, 16 tokens
  BiT-testing     37k params, 32 px: a two-stage ResNet-v2 (stride 8), global average pooling
  R+ViT-testing   45k params, 32 px: a two-stage ResNet (stride 8) under a one-layer ViT, 16 tokens

The variants differ in size as well as in architecture, and the learning rate is not tuned per
family; experiments/README.md says how far that lets the comparison go.
"""
import pathlib

import ml_collections

from vit_jax.config_cli import load_config_file
from vit_jax.sweep.space import axis, product, zipped

_DEFAULT = pathlib.Path(__file__).resolve().parent.parent / "default.py"
FAMILIES = {"ViT-tiny/4": 16, "BiT-testing": 32, "R+ViT-testing": 32}  # model -> image size
FRACTIONS = ("10%", "25%", "50%", "100%")


def get_config():
  config = load_config_file(f"{_DEFAULT}:pretrain")
  config.unlock()
  # The three families share no model field: every trial's model is its variant as registered.
  config.model = ml_collections.ConfigDict()
  # The batch crop follows the image size a trial sets (a reference, resolved when the run starts).
  size = config.data.get_ref("image_size")
  config.data.pp_batch = ("inception_crop(" + size.to_str()
                          + f", area_min={config.data.augment.area_min})|value_range(-1, 1)")
  return config.lock()


def get_sweep():
  families = zipped(axis("model_name", list(FAMILIES)), axis("data.image_size", list(FAMILIES.values())))
  return product(families, axis("data.train_split", [f"train[:{f}]" for f in FRACTIONS]))
