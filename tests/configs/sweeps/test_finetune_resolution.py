"""Specification of configs/sweeps/finetune_resolution.py: the default fine-tuning job from the
checkpoint in its argument, once per way of carrying position embeddings to the new grid and seed."""
import pathlib

import pytest

from vit_jax.configuration import INIT_POSEMB_MODES, check_values
from vit_jax.sweep import sweep_file

SWEEP = pathlib.Path(__file__).resolve().parents[3] / "configs" / "sweeps" / "finetune_resolution.py"


def test_every_mode_and_seed_fine_tunes_the_checkpoint_in_the_argument_at_32_px(tmp_path):
  sweep = sweep_file.load(f"{SWEEP}:{tmp_path}")
  assert (sweep.config.init_from, sweep.config.data.image_size) == (str(tmp_path), 32)
  assert [(t.overrides["init_posemb"], t.overrides["seed"]) for t in sweep.trials] == [
      (mode, seed) for mode in INIT_POSEMB_MODES for seed in (0, 1, 2)]
  for trial in sweep.trials:
    check_values(sweep_file.apply_overrides(sweep.config, trial.overrides))


def test_without_a_checkpoint_it_says_how_to_make_one():
  with pytest.raises(sweep_file.SweepError, match="needs the pretrained checkpoint as its argument: "
                     "python -m vit_jax.main --config=configs/default.py:pretrain"):
    sweep_file.load(str(SWEEP))
