"""Specification of fine-tuning every family at a new resolution through the command line.

Each family's config takes 'test' (its tiny variant on the embedded digits). A train state of its
shapes and shardings, filled with random values (no program is compiled to make it) and written by
the trainer's Checkpointer as a run's checkpoint, is the pretrained checkpoint; `python -m
vit_jax.main` then fine-tunes at twice the resolution, where the model's interface (class token or
not, pre-logits or not) decides how its weights are loaded.
"""
import os
import pathlib
import sys

import pytest

from vit_jax import checkpoint
from vit_jax.config_cli import load_config_file
from vit_jax.data import sources
from vit_jax.train.loop import setup

from .. import processes
from ..states import random_state

ROOT = pathlib.Path(__file__).resolve().parents[2]
# config argument -> (pretraining resolution, whether a learned position table is resized)
FAMILIES = {
    "configs/default.py:pretrain": (16, True),
    "configs/hybrid.py:test": (32, True),
    "configs/bit.py:test": (32, False),
    "configs/tnt.py:test": (32, True),
    "configs/t2t.py:test": (32, False),   # sinusoid positions: recomputed, nothing to resize
    "configs/lvvit.py:test": (32, True),
}


@pytest.mark.parametrize("config_arg", FAMILIES)
def test_every_family_fine_tunes_at_twice_the_resolution_from_the_command_line(config_arg, tmp_path):
  size, resizes = FAMILIES[config_arg]
  config = load_config_file(str(ROOT / config_arg))
  config.unlock()
  config.data.image_size = size
  config.batch_size = 16
  s = setup(config.lock(), sources.get_source(config.data))
  with checkpoint.Checkpointer(tmp_path / "pretrain" / checkpoint.CHECKPOINT_SUBDIR) as ckpt:
    ckpt.save(0, random_state(s.abstract_state), {"data_position": 0}, force=True)

  env = dict(os.environ, XLA_FLAGS=processes.xla_flags(2))
  proc = processes.run(
      [sys.executable, "-m", "vit_jax.main", f"--config={config_arg}",
       f"--workdir={tmp_path / 'finetune'}", f"--config.init_from={tmp_path / 'pretrain'}",
       f"--config.data.image_size={2 * size}", "--config.train.epochs=0", "--config.train.steps=1",
       "--config.optim.warmup_steps=0", "--config.train.log_every=1",
       "--config.batch_size=16", "--config.eval_batch_size=512",
       "--config.data.pp_batch=", "--config.data.pp_train="], cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1].startswith("final test accuracy: ")
  report = (tmp_path / "finetune" / "init_report.txt").read_text()
  assert ("resized  " in report) == resizes, report
  assert "reset    head/kernel" in report
