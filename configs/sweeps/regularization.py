"""Regularization on the digits: weight decay x dropout x label smoothing around the default
pretraining job (configs/default.py:pretrain, ViT-tiny/4 at 16 px, 60 epochs), 12 trials.

  python -m vit_jax.sweep --config=configs/sweeps/regularization.py --workdir=workdir/sweeps/regularization \\
      --parallel=2

The trial with weight decay 0.05, no dropout and no label smoothing is the default job itself.
"""
import pathlib

from vit_jax.config_cli import load_config_file
from vit_jax.sweep.space import axis, product

_DEFAULT = pathlib.Path(__file__).resolve().parent.parent / "default.py"


def get_config():
  return load_config_file(f"{_DEFAULT}:pretrain")


def get_sweep():
  return product(
      axis("optim.weight_decay", [0.0, 0.05, 0.3]),   # AdamW, decoupled; the default is 0.05
      axis("model.dropout_rate", [0.0, 0.1]),
      axis("train.label_smoothing", [0.0, 0.1]),
  )
