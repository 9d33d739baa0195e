"""Checkpoints: the Orbax training manager, params-only restore, public npz import, fine-tuning load.

  Checkpointer          Orbax manager for TrainState + JSON extra (async, atomic, keep K, checksums
                        verified, skips corrupt); CheckpointSaveError when a save fails (disk full).
  ChecksumMismatchError a restored step differs from its stored per-array checksums.
  workdir_lock.hold     one writer per workdir (<workdir>/LOCK); WorkdirLockError names the holder.
  restore_params        params only (numpy, host) from a workdir, Orbax step dir or .npz.
  restore_model_state   the non-parameter collections (BatchNorm statistics, fixed tables) of a run.
  load_npz              the public vit_jax npz format -> Linen-named params.
  load_pretrained       fine-tuning load: head reset, pre_logits drop/keep, posemb resize.
  resize_posemb         2D position-embedding interpolation with the reference semantics.
"""
from vit_jax.checkpoint import workdir_lock
from vit_jax.checkpoint.checksums import ChecksumMismatchError
from vit_jax.checkpoint.manager import CHECKPOINT_SUBDIR
from vit_jax.checkpoint.manager import CheckpointSaveError
from vit_jax.checkpoint.manager import Checkpointer
from vit_jax.checkpoint.manager import checkpoint_directory
from vit_jax.checkpoint.npz import load_npz
from vit_jax.checkpoint.params import restore_model_state
from vit_jax.checkpoint.params import restore_params
from vit_jax.checkpoint.posemb import resize_posemb
from vit_jax.checkpoint.pretrained import LoadReport
from vit_jax.checkpoint.pretrained import load_pretrained
from vit_jax.checkpoint.pretrained import load_pretrained_model_state
from vit_jax.checkpoint.workdir_lock import WorkdirLockError

__all__ = [
    "CHECKPOINT_SUBDIR", "CheckpointSaveError", "Checkpointer", "ChecksumMismatchError", "LoadReport",
    "WorkdirLockError", "checkpoint_directory", "load_npz", "load_pretrained",
    "load_pretrained_model_state", "resize_posemb", "restore_model_state", "restore_params", "workdir_lock",
]
