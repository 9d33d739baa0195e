"""Masked patch prediction on the embedded digits: the default job with self-supervised pretraining.

The ViT paper's objective (docs/architectures.md#masked-patch-prediction): ViT-tiny/4 at 16 px learns
to predict the 3-bit mean colour of its corrupted patches, without labels; configs/default.py's
fine-tuning at 32 px then starts from it (the [mask] embedding and the colour head are dropped, the
class head is created fresh). Same data, augmentation, optimizer and duration as configs/default.py.

  python -m vit_jax.main --config=configs/masked_patch.py:pretrain --workdir=workdir/mpp/pretrain
  python -m vit_jax.main --config=configs/masked_patch.py:finetune --workdir=workdir/mpp/finetune \
      --config.init_from=workdir/mpp/pretrain
"""
import pathlib

from vit_jax.config_cli import load_config_file

_DEFAULT = pathlib.Path(__file__).resolve().with_name("default.py")


def get_config(stage="pretrain"):
  if stage not in ("pretrain", "finetune"):
    raise ValueError(f"configs/masked_patch.py takes 'pretrain' or 'finetune', got {stage!r}")
  config = load_config_file(f"{_DEFAULT}:{stage}")  # locked: only its existing keys can change
  if stage == "pretrain":
    config.model.masked_patch_prediction = True
    config.loss = "masked_patch"        # the labels are not read
    config.evals.test.type = "masked_patch"  # colour accuracy of the test split's corrupted patches
  return config
