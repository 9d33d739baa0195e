"""Params (and model state) on host, from any checkpoint this project writes or reads: for fine-tuning
and export, without the optimizer that saved them."""
import os
from typing import Any, Union

from etils import epath
import orbax.checkpoint as ocp

from vit_jax.checkpoint import manager
from vit_jax.checkpoint import npz

PathLike = Union[str, os.PathLike]


def _restore_from_step(step_dir: epath.Path, entry: str) -> dict[str, Any]:
  """Restores only state[entry] of one Orbax step directory as numpy arrays (no optimizer needed)."""
  if not (step_dir / manager.STATE).exists():
    raise FileNotFoundError(
        f"{step_dir} has no '{manager.STATE}' item; expected a step directory written by "
        "vit_jax.checkpoint.Checkpointer")
  return manager.restore_on_host(step_dir / manager.STATE, only=entry)


def _is_step_dir(path: epath.Path) -> bool:
  return (path / manager.STATE).is_dir()


def restore_params(path: PathLike) -> dict[str, Any]:
  """Loads params (nested dict of numpy arrays, Linen names) from a workdir, step dir or npz file.

  `path` may be a training workdir (its checkpoints/ subdirectory, newest restorable step), an
  Orbax checkpoint directory (newest restorable step), a single Orbax step directory, or an .npz
  file in the public vit_jax format.
  """
  return _restore(path, "params")


def restore_model_state(path: PathLike) -> dict[str, Any]:
  """The non-parameter collections ({'batch_stats': ..., 'constants': ...}) saved with a training run;
  {} for an .npz file (the public format holds parameters only) or a run of a model without any."""
  if npz.resolve(path).endswith(".npz"):
    return {}
  try:
    return _restore(path, "model_state")
  except ValueError as e:
    if "has no 'model_state' entry" in str(e):
      return {}
    raise


def _restore(path: PathLike, entry: str) -> dict[str, Any]:
  path_str = npz.resolve(path)
  if path_str.endswith(".npz"):
    return npz.load_npz(path_str)
  root = epath.Path(path_str)
  if not root.exists():
    raise FileNotFoundError(f"no checkpoint at {path_str}: expected a workdir, step dir or .npz file")
  if root.is_file():
    return npz.load_npz(path_str)
  if _is_step_dir(root):
    return _restore_from_step(root, entry)
  if (root / manager.CHECKPOINT_SUBDIR).is_dir():
    root = root / manager.CHECKPOINT_SUBDIR
  step_dirs = {ocp.utils.step_from_checkpoint_name(p.name): p
               for p in ocp.utils.checkpoint_steps_paths(root)}
  if not step_dirs:
    raise FileNotFoundError(
        f"no complete Orbax checkpoint step under {path_str}: expected a training workdir, its "
        f"{manager.CHECKPOINT_SUBDIR}/ directory, a step directory or an .npz file")
  _, restored, _ = manager.restore_newest_complete(
      list(step_dirs), lambda step: _restore_from_step(step_dirs[step], entry), os.fspath(root))
  return restored
