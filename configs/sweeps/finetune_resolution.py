"""Fine-tuning at twice the resolution with the position embeddings interpolated in 2D (the
reference), interpolated as a 1D sequence (a loader blind to the grid) or reset to a fresh init, from
one pretrained default-job checkpoint (ViT-tiny/4 at 16 px: a 4x4 grid; 32 px: 8x8), 3 seeds each.
9 trials of configs/default.py:finetune (SGD-momentum, 20 epochs).

  python -m vit_jax.main --config=configs/default.py:pretrain --workdir=workdir/experiments/pretrain
  python -m vit_jax.sweep --config=configs/sweeps/finetune_resolution.py:workdir/experiments/pretrain \\
      --workdir=workdir/experiments/finetune_resolution --parallel=2

The argument is the pretrained checkpoint (a workdir, an Orbax step or an .npz), as
config.init_from takes it; each trial's init_report.txt says what its position embeddings became.
"""
import pathlib

from vit_jax.config_cli import load_config_file
from vit_jax.sweep.space import axis, product

_DEFAULT = pathlib.Path(__file__).resolve().parent.parent / "default.py"
MODES = ("interpolate_2d", "interpolate_1d", "reset")
SEEDS = (0, 1, 2)


def get_config(init_from=""):
  if not init_from:
    raise ValueError(
        "configs/sweeps/finetune_resolution.py needs the pretrained checkpoint as its argument: "
        "python -m vit_jax.main --config=configs/default.py:pretrain --workdir=workdir/experiments/"
        "pretrain, then --config=configs/sweeps/finetune_resolution.py:workdir/experiments/pretrain")
  config = load_config_file(f"{_DEFAULT}:finetune")
  config.unlock()
  config.init_from = init_from
  return config.lock()


def get_sweep():
  return product(axis("init_posemb", list(MODES)), axis("seed", list(SEEDS)))
