"""workdir_lock.hold: one writer per workdir, the holder named, a dead holder's lock taken over."""
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from vit_jax.checkpoint import WorkdirLockError, workdir_lock

REPO = pathlib.Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from vit_jax.checkpoint import workdir_lock
with workdir_lock.hold(sys.argv[1]):
  print("holding", flush=True)
  sys.stdin.read()  # Until the test closes stdin.
print("released", flush=True)
"""


def start_holder(workdir, log):
  """Another run, in its own process, holding the lock of `workdir` until its stdin is closed."""
  with open(log, "w") as stderr:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
  line = proc.stdout.readline()
  assert line == "holding\n", f"the holder did not start: {line!r}\n{pathlib.Path(log).read_text()}"
  return proc


def lock_contents(workdir):
  return json.loads((workdir / workdir_lock.LOCK_FILE).read_text())


def test_a_second_run_is_refused_with_the_holder_named(tmp_path):
  workdir = tmp_path / "run"
  holder = start_holder(workdir, tmp_path / "holder.log")
  try:
    with pytest.raises(WorkdirLockError, match=(
        rf"the workdir {workdir} is in use by another run: process {holder.pid} on host "
        rf"{socket.gethostname()}, started \S+, command: -c {workdir}\. Stop that run, or use another "
        r"--workdir")):
      with workdir_lock.hold(workdir):
        pytest.fail("the body must not run while another run holds the workdir")
  finally:
    holder.stdin.close()
  assert holder.stdout.readline() == "released\n"
  assert holder.wait() == 0
  assert "released" in lock_contents(workdir)
  with workdir_lock.hold(workdir):  # Free again.
    assert lock_contents(workdir)["pid"] == os.getpid()
    assert "released" not in lock_contents(workdir)


def test_a_killed_holder_leaves_the_lock_takeable_and_is_named(tmp_path, caplog):
  workdir = tmp_path / "run"
  holder = start_holder(workdir, tmp_path / "holder.log")
  holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the flock.
  holder.wait()
  holder.stdout.close()
  holder.stdin.close()
  assert lock_contents(workdir)["pid"] == holder.pid  # Its name is still in the file...
  with caplog.at_level(logging.WARNING), workdir_lock.hold(workdir):  # ...but the lock is free.
    assert lock_contents(workdir)["pid"] == os.getpid()
  assert f"from process {holder.pid} on host {socket.gethostname()}" in caplog.text
  assert "crashed or was killed" in caplog.text


def test_the_lock_is_released_when_the_body_raises(tmp_path):
  with pytest.raises(ValueError, match="training failed"), workdir_lock.hold(tmp_path):
    with pytest.raises(WorkdirLockError, match="in use by another run"), workdir_lock.hold(tmp_path):
      pass  # A second holder, even in the same process, is refused.
    raise ValueError("training failed")
  with workdir_lock.hold(tmp_path):
    pass


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "run").write_text("not a directory")
  with pytest.raises(WorkdirLockError, match=rf"cannot create the workdir lock {tmp_path}/run/LOCK"):
    with workdir_lock.hold(tmp_path / "run"):
      pass


def test_remote_workdirs_are_not_locked(caplog):
  with caplog.at_level(logging.INFO), workdir_lock.hold("gs://bucket/run"):
    pass
  assert "Not locking the remote workdir gs://bucket/run" in caplog.text
