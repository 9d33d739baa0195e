"""Child processes of tests, waited on by their progress rather than by a wall-clock limit.

A loaded machine makes children slow, not stuck: a test fails only when its processes have made
no progress (printed output, computed, or exited) for QUIET_SECONDS, or, against a hang that
spins, when they have run HARD_LIMIT_SECONDS in all. The failure shows each process's last output.

    procs = [processes.start([...], log=tmp_path / f"{i}.log") for i in range(2)]
    processes.wait(procs)                      # every process has exited; [exit time of each]
    done = processes.run([...])                # one command: .returncode, .stdout, .stderr
"""
import dataclasses
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence

QUIET_SECONDS = 300        # Fail after this long without any progress of the processes waited on.
HARD_LIMIT_SECONDS = 1800  # Each process is killed (by `timeout`) after this long, progress or not.
# A process computes while it uses at least this share of a core (measured over CPU_WINDOW seconds
# or more): one doing work gets ~0.2 of a core even at load 10 on 2 cores, while one blocked in a
# collective uses ~0.02 (its heartbeat and progress-bar threads).
BUSY_SHARE = 0.1
CPU_WINDOW = 10.0
TAIL_CHARS = 3000          # How much of each process's output a failure shows.
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Process:
  """A command started by `start`; `popen` is its `timeout` wrapper, which leads its group."""
  popen: subprocess.Popen
  log: pathlib.Path                 # stdout, and stderr unless `stderr_log` is set
  stderr_log: Optional[pathlib.Path]
  exit_time: Optional[float] = None  # time.time() at its exit, set by a thread that waits for it

  @property
  def returncode(self) -> Optional[int]:
    return self.popen.returncode  # Set once it has exited (see _record_exit).

  def output(self) -> str:
    """Everything it has printed so far (stdout, then stderr when they go to separate files)."""
    text = self.log.read_text(errors="replace")
    if self.stderr_log:
      text += self.stderr_log.read_text(errors="replace")
    return text

  def tail(self, chars: int = TAIL_CHARS) -> str:
    return self.output()[-chars:]

  def command_pid(self) -> int:
    """The pid of the command itself (the child of its `timeout` wrapper)."""
    while not (children := _children(self.popen.pid)):  # `timeout` forks it as it starts.
      assert self.exit_time is None, f"{self.popen.args[4:]} has exited"
      time.sleep(0.01)
    return children[0]

  def signal(self, signum: int) -> None:
    """Sends signum to the command (SIGKILL there kills it as a crash would; `timeout` follows)."""
    os.kill(self.command_pid(), signum)

  def _record_exit(self) -> None:
    self.popen.wait()
    self.exit_time = time.time()

  def kill(self) -> None:
    """Kills the whole process group if it still runs, and reaps it."""
    if self.exit_time is None:
      try:
        os.killpg(self.popen.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self.popen.wait()


# Tests and their child processes compile without LLVM's optimisation passes (tests/conftest.py):
# their programs are tiny, so compiling them is what takes time, and level 0 compiles about 40%
# faster. Its arithmetic is the same IEEE operations without fused multiply-adds; every program of
# a test run is built this way, so runs compared with each other are built alike.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int, fast_compile: bool = True) -> str:
  """XLA_FLAGS for a child process: the test's own (tests/conftest.py) with `devices` fake CPU
  devices, compiling fast (FAST_COMPILE) unless `fast_compile` is False (as in production)."""
  kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
          if not flag.startswith("--xla_force_host_platform_device_count") and flag != FAST_COMPILE]
  kept.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(kept + [FAST_COMPILE] if fast_compile else kept)


def start(command: Sequence[str], *, log: os.PathLike, stderr_log: Optional[os.PathLike] = None,
          cwd: Optional[os.PathLike] = None, env: Optional[dict] = None) -> Process:
  """Starts `command` in its own process group, under `timeout HARD_LIMIT_SECONDS` (so that not even
  an interrupted test session leaves it running), its output going to `log` (and `stderr_log`)."""
  log = pathlib.Path(log)
  stderr_log = pathlib.Path(stderr_log) if stderr_log else None
  log.parent.mkdir(parents=True, exist_ok=True)
  with open(log, "wb") as out, open(stderr_log or os.devnull, "wb") as err:
    popen = subprocess.Popen(
        ["timeout", "-k", "10", str(HARD_LIMIT_SECONDS), *command], cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=out, stderr=err if stderr_log else subprocess.STDOUT,
        start_new_session=True)
  proc = Process(popen, log, stderr_log)
  threading.Thread(target=proc._record_exit, daemon=True).start()  # pylint: disable=protected-access
  return proc


def _children(pid: int) -> list[int]:
  try:
    return [int(p) for task in os.listdir(f"/proc/{pid}/task")
            for p in pathlib.Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
  except (FileNotFoundError, ProcessLookupError):
    return []


def _cpu_seconds(pid: int) -> float:
  """CPU time of pid and all its descendants (0 for what has exited)."""
  try:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  except (FileNotFoundError, ProcessLookupError):
    return 0.0
  own = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
  return own + sum(_cpu_seconds(child) for child in _children(pid))


def _sizes(procs: Sequence[Process]) -> list[int]:
  sizes = []
  for proc in procs:
    for path in (proc.log, proc.stderr_log):
      sizes.append(path.stat().st_size if path and path.exists() else 0)
  return sizes


def report(procs: Sequence[Process]) -> str:
  """Each process's command, state and last output."""
  parts = []
  for i, proc in enumerate(procs):
    state = "running" if proc.returncode is None else f"exit code {proc.returncode}"
    parts.append(f"--- process {i} ({state}): {' '.join(map(str, proc.popen.args[4:]))[:300]}\n"
                 f"{proc.tail()}")
  return "\n".join(parts)


def wait(procs: Sequence[Process], *, until: Optional[Callable[[], bool]] = None,
         quiet: float = QUIET_SECONDS, poll: float = 0.1) -> list[Optional[float]]:
  """Waits until every process has exited, or, given `until`, until until() is true (then a process
  that exits first is a failure). Fails when for `quiet` seconds none of them has printed, computed
  (used BUSY_SHARE of a core) or exited; kills them all when it fails. Returns each exit time
  (time.time(); None for a process still running)."""
  progress_at = cpu_since = time.monotonic()
  last_state = (_sizes(procs), len(procs))
  last_cpu = [_cpu_seconds(p.popen.pid) for p in procs]
  try:
    while True:
      now = time.monotonic()
      exits = [p.exit_time for p in procs]
      if until is not None:
        if until():
          return exits
        assert exits.count(None) == len(procs), (
            "a process exited before the awaited condition held:\n" + report(procs))
      elif None not in exits:
        return exits
      state = (_sizes(procs), exits.count(None))
      if state != last_state:
        last_state, progress_at = state, now
      if now - cpu_since >= CPU_WINDOW:
        cpu = [_cpu_seconds(p.popen.pid) for p in procs]
        if any(c - l >= BUSY_SHARE * (now - cpu_since) for c, l in zip(cpu, last_cpu)):
          progress_at = now
        last_cpu, cpu_since = cpu, now
      assert now - progress_at < quiet, (
          f"no progress (output, computing or an exit) for {quiet:.0f} s:\n" + report(procs))
      time.sleep(poll)
  except BaseException:
    for proc in procs:
      proc.kill()
    raise


@dataclasses.dataclass
class Completed:
  returncode: int
  stdout: str
  stderr: str


def run(command: Sequence[str], *, cwd: Optional[os.PathLike] = None, env: Optional[dict] = None,
        quiet: float = QUIET_SECONDS) -> Completed:
  """Runs one command to its end, waited on by progress (see `wait`); like subprocess.run with
  capture_output=True, text=True."""
  with tempfile.TemporaryDirectory(prefix="test-process-") as logs:
    proc = start(command, log=pathlib.Path(logs, "stdout"), stderr_log=pathlib.Path(logs, "stderr"),
                 cwd=cwd, env=env)
    wait([proc], quiet=quiet)
    return Completed(proc.returncode, proc.log.read_text(errors="replace"),
                     proc.stderr_log.read_text(errors="replace"))
