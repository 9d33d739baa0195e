"""Orbax checkpoints of the training state: async atomic saves, last K kept, corrupt steps skipped loudly.

Each step directory holds three items: 'state' (the TrainState pytree), 'extra' (a JSON dict such as
the data-iterator position and the config), so a run killed at any moment resumes where it stopped,
and 'checksums' (a fingerprint per array, see checksums.py), so that silently changed files are
caught on restore. Steps written before checksums existed restore unverified.

Arrays are written uncompressed by default: zstd finds little to remove in float32 weights and
optimizer moments (a few percent) and costs the background write most of its CPU time, which on a
CPU host is taken from the train step (experiments/README.md, "Overheads around the step").
Compressed steps, as written before, restore all the same.
"""
import errno
import json
import logging as py_logging
import os
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from vit_jax.checkpoint import checksums
from vit_jax.checkpoint import npz
from vit_jax.checkpoint import replica_writes
from vit_jax.checkpoint import writer_priority

CHECKPOINT_SUBDIR = "checkpoints"  # Under a training workdir.
CORRUPT_SUBDIR = "corrupt"  # Under the checkpoint directory: steps that failed to restore.
SET_ASIDE_SUBDIR = "set_aside"  # Under the checkpoint directory: steps newer than a chosen restore step.
STATE, EXTRA, CHECKSUMS = "state", "extra", "checksums"

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


class CheckpointSaveError(OSError):
  """A checkpoint save failed (e.g. the disk is full); the message names the step, the directory,
  the steps still intact and what to do. `.original` is the error Orbax raised; it is also the
  __cause__ (traceback shown) unless the disk is full, where its long traceback would bury the message.
  """
  original: Optional[BaseException] = None


def _is_disk_full(error: BaseException) -> bool:
  while error is not None:
    if getattr(error, "errno", None) == errno.ENOSPC or any(
        sign in str(error) for sign in ("No space left on device", "os_error_code='28'")):
      return True
    error = error.__cause__ or error.__context__
  return False


class _OneLineOrbaxErrors(py_logging.Filter):
  """Keeps Orbax's error records to their message line: a failed asynchronous save otherwise logs the
  same traceback from several threads (hundreds of lines); Checkpointer raises it once instead."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR and record.exc_info and (
        f"{os.sep}orbax{os.sep}" in record.pathname):
      error = record.exc_info[1]
      record.msg = (f"{record.getMessage()} [{type(error).__name__}: {str(error)[:300]}; traceback "
                    "omitted, vit_jax.checkpoint raises this error]")
      record.args, record.exc_info, record.exc_text = (), None, None
    return True


def _install_log_filter() -> None:
  logger = py_logging.getLogger("absl")  # Orbax logs through absl.logging.
  if not any(isinstance(f, _OneLineOrbaxErrors) for f in logger.filters):
    logger.addFilter(_OneLineOrbaxErrors())


class Checkpointer:
  """Saves and restores (TrainState, extra JSON dict) with an Orbax CheckpointManager.

  Saves are asynchronous (training continues while arrays are written) and atomic (Orbax writes a
  temporary directory and renames it when complete). The last `keep` steps are kept. `restore()`
  restores onto the shardings of an abstract target, and skips a corrupt newest step loudly, moving
  it to `<directory>/corrupt/` so that later saves are not blocked by it. Each array's checksum is
  stored with the step and verified on restore: a mismatch counts as a corrupt step.

  A failed save (disk full, lost permissions) raises one CheckpointSaveError from whichever call
  notices it first: save() (of the next step), wait_until_finished() or close().

  On a CPU backend the background write yields to the train step until something waits for it
  (writer_priority.py). `compress=True` writes zstd-compressed arrays (smaller, slower to write).
  """

  def __init__(self, directory: Any, *, save_every: int = 1, keep: Optional[int] = 3,
               async_save: bool = True, compress: bool = False):
    self.directory = npz.resolve(directory)
    # Every `save_every` steps exactly (Orbax's default also saves the first step it sees), and
    # whenever JAX's preemption notice has been reached.
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        save_decision_policy=policy)
    _install_log_filter()
    replica_writes.write_replicas_whole_on_cpu()
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.PyTreeCheckpointHandler(use_compression=compress),
                       EXTRA: ocp.JsonCheckpointHandler(), CHECKSUMS: ocp.JsonCheckpointHandler()})
    self._pending_step: Optional[int] = None  # The step whose asynchronous save may be in flight.

  def save(self, step: int, state: Any, extra: Optional[dict[str, Any]] = None, *,
           force: bool = False) -> bool:
    """Starts saving `state` and `extra` at `step` if it is due (every `save_every`) or `force`d.

    Returns whether a save was started; it completes in the background (see wait_until_finished).
    A due save first waits for the previous one and fingerprints `state` on device (checksums.py).
    Raises CheckpointSaveError if this save, or the previous asynchronous one, failed.
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
    if not (force or self._manager.should_save(step)):
      return False
    self.wait_until_finished()  # A failure of the previous save is reported with its own step.
    record = checksums.record(state)
    try:
      started = self._manager.save(
          step, args=ocp.args.Composite(**{
              STATE: ocp.args.PyTreeSave(state), EXTRA: ocp.args.JsonSave(extra),
              CHECKSUMS: ocp.args.JsonSave(record)}),
          force=True)  # Already decided above; asking the policy twice would repeat its side effects.
    except Exception as e:
      self._raise_save_error(step, e)
    self._pending_step = step if started else None
    if started:
      writer_priority.yield_to_step()
    return started

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
    """Restores one step and verifies its checksums (on device for a sharded restore)."""
    step_dir = epath.Path(self.directory) / str(step)
    json_items = {EXTRA: ocp.args.JsonRestore()}
    has_checksums = (step_dir / CHECKSUMS).exists()
    if has_checksums:
      json_items[CHECKSUMS] = ocp.args.JsonRestore()
    if abstract_state is None:
      restored = self._manager.restore(step, args=ocp.args.Composite(**json_items))
      state = restore_on_host(step_dir / STATE)
    else:
      restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
      restored = self._manager.restore(step, args=ocp.args.Composite(
          **{STATE: ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args)},
          **json_items))
      state = restored[STATE]
    if has_checksums:
      checksums.verify(state, restored[CHECKSUMS], f"checkpoint step {step} in {self.directory}")
    else:
      logging.info("Checkpoint step %d in %s has no checksums (saved before they were added); "
                   "restored without verifying its arrays.", step, self.directory)
    return state, restored[EXTRA]

  def _move_aside(self, steps: Sequence[int], subdir: str, why: str) -> None:
    """Moves step directories to <directory>/<subdir>/<step>-<unix time>/ (kept, never deleted);
    process 0 moves, every process waits for it, then the manager re-reads the directory."""
    root, stamp = epath.Path(self.directory), int(time.time())
    for step in steps:
      source, target = root / str(step), root / subdir / f"{step}-{stamp}"
      if jax.process_index() == 0 and source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
      logging.warning("Moved checkpoint step %d (%s) to %s.", step, why, target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes(f"vit_jax_{subdir}_{'_'.join(map(str, steps))}_{stamp}")
    self._manager.reload()

  def _quarantine(self, steps: Sequence[int]) -> None:
    """Moves unreadable step directories aside, keeping them for inspection."""
    self._move_aside(steps, CORRUPT_SUBDIR, "unreadable")

  def set_aside_newer_than(self, step: int) -> list[int]:
    """Moves every saved step newer than `step` to <directory>/set_aside/<step>-<unix time>/ and
    returns them; for resuming from an earlier kept step, so that later saves continue from `step`
    without the abandoned steps blocking them or being rotated over them. Nothing is deleted.

    Raises ValueError if `step` is not a saved step (so a typo cannot set every step aside).
    """
    self.wait_until_finished()
    step, kept = int(step), self.all_steps()
    if step not in kept:
      raise ValueError(f"step {step} is not a saved checkpoint in {self.directory}; the saved steps "
                       f"are {kept}. Choose one of them as the restore step.")
    newer = [s for s in kept if s > step]
    if newer:
      self._move_aside(newer, SET_ASIDE_SUBDIR, f"newer than the restore step {step}")
    return newer

  def _save_error(self, step: Optional[int], cause: BaseException) -> CheckpointSaveError:
    """One readable error for a failed save: what failed, what is intact, what to do."""
    try:
      self._manager.reload()
      kept = self.all_steps()
    except Exception:  # pylint: disable=broad-except  # The listing is a courtesy; keep the real error.
      kept = None
    which = "a checkpoint" if step is None else f"checkpoint step {step}"
    reason = f"{type(cause).__name__}: {str(cause)[:500]}"
    full = _is_disk_full(cause)
    if kept is None:
      intact = "The steps saved before it are untouched (listing them failed)."
    elif kept:
      intact = (f"The checkpoints already saved are intact: steps {kept}; the partial step is "
                "discarded by the next save.")
    else:
      intact = "No earlier checkpoint exists in that directory."
    resume = f"resumes from step {kept[-1]}" if kept else "starts from the beginning"
    todo = ("Free space on that disk (or keep fewer checkpoints, or use a larger disk), then rerun the "
            if full else "Fix the cause, then rerun the ")
    error = CheckpointSaveError(
        f"saving {which} to {self.directory} failed{': the disk is full' if full else ''} "
        f"({reason}). {intact} {todo}same command: training {resume}.")
    error.original = cause
    if full:
      error.errno = errno.ENOSPC
    return error

  def _raise_save_error(self, step: Optional[int], cause: BaseException) -> None:
    error = self._save_error(step, cause)
    raise error from (None if error.errno == errno.ENOSPC else cause)

  def wait_until_finished(self) -> None:
    """Blocks until the pending asynchronous save (if any) is committed; raises CheckpointSaveError
    (once) if it failed."""
    step, self._pending_step = self._pending_step, None
    writer_priority.full_speed()
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      self._raise_save_error(step, e)

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources, also when the save failed (then
    the CheckpointSaveError is raised after the resources are released)."""
    try:
      self.wait_until_finished()
    finally:
      self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    """Finishes an in-flight save (an interpreter exiting under it loses the step and prints hundreds
    of 'Event loop is closed' tracebacks). When the body raised, a failed save is logged, not raised,
    so that the error that stopped the body is the one reported."""
    del exc_type, traceback
    try:
      self.close()
    except CheckpointSaveError as save_error:
      if exc is None:
        raise
      logging.error("%s", save_error)
