"""Orbax checkpoints of the training state: async atomic saves, last K kept, corrupt steps skipped loudly.

Each step directory holds two items: 'state' (the TrainState pytree) and 'extra' (a JSON dict such as
the data-iterator position and the config), so a run killed at any moment resumes where it stopped.
"""
import json
import os
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from vit_jax.checkpoint import npz

CHECKPOINT_SUBDIR = "checkpoints"  # Under a training workdir.
CORRUPT_SUBDIR = "corrupt"  # Under the checkpoint directory: steps that failed to restore.
STATE, EXTRA = "state", "extra"

T = TypeVar("T")


def checkpoint_directory(workdir: Any) -> str:
  """Where a training run under `workdir` keeps its Orbax step directories."""
  return os.path.join(os.fspath(workdir), CHECKPOINT_SUBDIR)


def abstract_on_host(tree_metadata: Any) -> Any:
  """Orbax array metadata -> jax.ShapeDtypeStruct without sharding, which Orbax restores as numpy."""
  def to_struct(leaf):
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
      return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)
    return leaf
  return jax.tree.map(to_struct, getattr(tree_metadata, "tree", tree_metadata))


def restore_on_host(item_dir: Any, only: Optional[str] = None) -> Any:
  """Restores a saved pytree item (or only its top-level entry `only`) as numpy arrays on the host.

  Needs no target structure: it is read from the checkpoint's metadata, so e.g. params restore
  without knowing the optimizer that saved them.
  """
  handler = ocp.PyTreeCheckpointHandler()
  try:
    target = abstract_on_host(handler.metadata(epath.Path(item_dir)))
    if only is not None:
      if not isinstance(target, dict) or only not in target:
        raise ValueError(f"the checkpoint item {item_dir} has no '{only}' entry")
      target = {only: target[only]}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = handler.restore(epath.Path(item_dir), args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=only is not None))
  finally:
    handler.close()
  restored = jax.tree.map(np.asarray, restored)
  return restored[only] if only is not None else restored


def _all_processes_succeeded(ok: bool) -> bool:
  """Agreement across hosts, so that every process restores the same step."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def restore_newest_complete(
    steps: Sequence[int], restore_step: Callable[[int], T], where: str) -> tuple[int, T, list[int]]:
  """Tries `restore_step` on `steps` newest first; a step that fails is logged loudly and skipped.

  Returns (step, restored, failed_newer_steps). Raises RuntimeError when no step can be restored,
  which usually means the restore target no longer matches the checkpoints (changed model/optimizer).
  """
  errors = []
  for step in sorted(steps, reverse=True):
    error = None
    try:
      result = restore_step(step)
    except Exception as e:  # pylint: disable=broad-except  # Corruption shows up as many error types.
      error = e
    if _all_processes_succeeded(error is None):
      if errors:
        logging.warning("Restored step %d from %s after skipping unreadable step(s) %s.",
                        step, where, [s for s, _ in errors])
      return step, result, [s for s, _ in errors]
    error = error or RuntimeError("another process failed to restore this step")
    errors.append((step, error))
    logging.warning(
        "\n%s\nCHECKPOINT STEP %d IN %s CANNOT BE RESTORED; it looks corrupt or partial:\n  %s: %s\n"
        "Trying the previous step.\n%s",
        "!" * 78, step, where, type(error).__name__, str(error)[:1000], "!" * 78)
  if not errors:
    raise FileNotFoundError(f"no complete checkpoint in {where}; start from scratch or check the path")
  details = "\n".join(f"  step {s}: {type(e).__name__}: {str(e)[:300]}" for s, e in errors)
  raise RuntimeError(
      f"no checkpoint step in {where} could be restored. If every step fails the same way, the "
      f"restore target probably does not match what was saved (changed model, optimizer or "
      f"state structure):\n{details}") from errors[0][1]


class Checkpointer:
  """Saves and restores (TrainState, extra JSON dict) with an Orbax CheckpointManager.

  Saves are asynchronous (training continues while arrays are written) and atomic (Orbax writes a
  temporary directory and renames it when complete). The last `keep` steps are kept. `restore()`
  restores onto the shardings of an abstract target, and skips a corrupt newest step loudly, moving
  it to `<directory>/corrupt/` so that later saves are not blocked by it.
  """

  def __init__(self, directory: Any, *, save_every: int = 1, keep: Optional[int] = 3,
               async_save: bool = True):
    self.directory = npz.resolve(directory)
    # Every `save_every` steps exactly (Orbax's default also saves the first step it sees), and
    # whenever JAX's preemption notice has been reached.
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        save_decision_policy=policy)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(), EXTRA: ocp.JsonCheckpointHandler()})

  def save(self, step: int, state: Any, extra: Optional[dict[str, Any]] = None, *,
           force: bool = False) -> bool:
    """Starts saving `state` and `extra` at `step` if it is due (every `save_every`) or `force`d.

    Returns whether a save was started; it completes in the background (see wait_until_finished).
    """
    step = int(step)
    extra = dict(extra or {})
    try:
      json.dumps(extra)
    except TypeError as e:
      raise TypeError(
          f"checkpoint extra must be JSON-serializable (numbers, strings, lists, dicts): {e}") from e
    if step in self._manager.all_steps():
      logging.info("Checkpoint for step %d already exists in %s; not saving again.", step,
                   self.directory)
      return False
    return self._manager.save(
        step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state), EXTRA: ocp.args.JsonSave(extra)}),
        force=force)

  def latest_step(self) -> Optional[int]:
    """The newest saved step (not yet checked for corruption; restore() does that), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: Optional[int] = None, *, abstract_state: Any = None) -> tuple[Any, dict]:
    """Restores (state, extra) from `step`, or from the newest restorable step when step is None.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct carrying the target `.sharding` (e.g. from
    jax.eval_shape plus the training shardings); arrays are restored directly onto those shardings,
    whatever topology saved them. Without it, the state comes back as host numpy arrays in nested
    dicts (for inspection; no device memory is used).
    """
    self.wait_until_finished()
    if step is not None:
      try:
        return self._restore_step(int(step), abstract_state)
      except Exception as e:
        raise RuntimeError(
            f"restoring checkpoint step {step} from {self.directory} failed ({type(e).__name__}: "
            f"{str(e)[:500]}); the step may be corrupt, or the target may not match what was saved. "
            "Call restore() without a step to fall back to the newest readable step.") from e
    _, restored, bad_steps = restore_newest_complete(
        self._manager.all_steps(), lambda s: self._restore_step(s, abstract_state), self.directory)
    if bad_steps:
      self._quarantine(bad_steps)
    return restored

  def _restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    if abstract_state is None:
      step_dir = epath.Path(self.directory) / str(step)
      extra = self._manager.restore(step, args=ocp.args.Composite(**{EXTRA: ocp.args.JsonRestore()}))
      return restore_on_host(step_dir / STATE), extra[EXTRA]
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state), EXTRA: ocp.args.JsonRestore()}))
    return restored[STATE], restored[EXTRA]

  def _quarantine(self, steps: Sequence[int]) -> None:
    """Moves unreadable step directories aside, keeping them for inspection."""
    root = epath.Path(self.directory)
    for step in steps:
      source = root / str(step)
      target = root / CORRUPT_SUBDIR / f"{step}-{int(time.time())}"
      if jax.process_index() == 0 and source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
      logging.warning("Moved unreadable checkpoint step %d to %s.", step, target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes(f"vit_jax_quarantine_{'_'.join(map(str, steps))}")
    self._manager.reload()

  def wait_until_finished(self) -> None:
    """Blocks until the pending asynchronous save (if any) is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources."""
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
