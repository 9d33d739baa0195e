"""One writer per workdir: an exclusive lock on <workdir>/LOCK, held by process 0 of a job.

The lock is a kernel flock on that file, so it disappears with its process: a crash (even kill -9)
never leaves the workdir locked; the next run takes it over and logs who held it before. The file
itself stays on disk: JSON naming its holder (host, pid, start time, command) while held, and the
same plus "released" (ISO time) after a clean exit; a crashed holder leaves it without "released".
Remote workdirs (gs://...) cannot be flock'ed and are not locked.
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Any, Iterator, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from vit_jax.checkpoint import npz

LOCK_FILE = "LOCK"
_MESSAGE_BYTES = 2048  # Room for the error message broadcast from process 0 to the others.


class WorkdirLockError(RuntimeError):
  """The workdir lock cannot be taken (another run holds it, or the workdir is not writable); the
  message names the holder or the path and says what to do."""


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_holder(fd: int) -> dict[str, Any]:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 1 << 16).decode("utf-8", "replace")
  try:
    holder = json.loads(text) if text.strip() else {}
  except ValueError:
    holder = {"contents": text[:200]}
  return holder if isinstance(holder, dict) else {"contents": text[:200]}


def _describe(holder: dict[str, Any]) -> str:
  if not holder:
    return "an unknown process (it has not written its name yet)"
  if "pid" not in holder:
    return f"an unknown process (the lock file holds {holder})"
  return (f"process {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}, "
          f"command: {holder.get('command')}")


def _write(fd: int, content: dict[str, Any]) -> None:
  data = (json.dumps(content, indent=1) + "\n").encode()
  os.ftruncate(fd, 0)
  os.pwrite(fd, data, 0)
  os.fsync(fd)


def _acquire(path: str) -> tuple[Optional[int], str]:
  """(fd of the held lock, "") or (None, error message)."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    return None, (f"cannot create the workdir lock {path}: {e}; check that the workdir is a writable "
                  "directory")
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _read_holder(fd)
    os.close(fd)
    return None, (f"the workdir {os.path.dirname(path)} is in use by another run: {_describe(holder)}. "
                  "Stop that run, or use another --workdir (two runs writing one workdir mix up "
                  f"their checkpoints). Lock file: {path}")
  except OSError as e:
    os.close(fd)
    return None, (f"cannot lock {path}: {e}; the filesystem may not support locks: use a local "
                  "workdir or another filesystem")
  try:
    previous = _read_holder(fd)
    if previous and "released" not in previous:
      logging.warning("Taking over the workdir lock %s from %s, which ended without releasing it "
                      "(crashed or was killed).", path, _describe(previous))
    _write(fd, {"host": socket.gethostname(), "pid": os.getpid(), "started": _now(),
                "command": " ".join(sys.argv)})
  except OSError as e:
    os.close(fd)
    return None, f"cannot write the workdir lock {path}: {e}; check the disk (full? read-only?)"
  return fd, ""


def _agree(message: str) -> str:
  """Process 0's error message ("" for success), known to every process of the job."""
  if jax.process_count() == 1:
    return message
  data = np.zeros(_MESSAGE_BYTES, np.uint8)
  encoded = message.encode("utf-8")[:_MESSAGE_BYTES - 1]
  data[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  data = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return bytes(data).rstrip(b"\0").decode("utf-8", "replace")


@contextlib.contextmanager
def hold(workdir: Any) -> Iterator[None]:
  """Holds <workdir>/LOCK while the body runs (every process of a job calls it; process 0 locks).

  Raises WorkdirLockError on every process when another live run holds it, naming that run.
  Released when the body exits, also by an exception, and by the kernel if the process dies.
  """
  workdir = npz.resolve(workdir)
  if npz.is_remote(workdir):
    logging.info("Not locking the remote workdir %s (remote storage has no file locks); make sure "
                 "a single run writes it.", workdir)
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  fd, message = None, ""
  if jax.process_index() == 0:
    try:
      fd, message = _acquire(path)
    except Exception as e:  # pylint: disable=broad-except  # The other processes must hear of it.
      message = f"cannot take the workdir lock {path}: {type(e).__name__}: {e}"
  message = _agree(message)
  if message:
    raise WorkdirLockError(message if jax.process_index() == 0 else
                             f"process 0 could not lock the workdir: {message}")
  try:
    yield
  finally:
    if fd is not None:
      try:
        holder = _read_holder(fd)
        holder["released"] = _now()
        _write(fd, holder)
      except OSError as e:  # The lock still goes with the descriptor; the note is a courtesy.
        logging.warning("Could not mark the workdir lock %s as released: %s", path, e)
      finally:
        os.close(fd)  # Releases the flock.
