"""The processes of a multi-host job: connecting them, and stopping all of them when one fails.

JAX itself aborts the other processes when one is killed (its collectives or the coordination
service's heartbeats notice), and turns SIGTERM on any process into a preemption step they all stop
at (see train/loop.py). A process that fails with a Python exception, though, would wait at exit
for its peers while they wait for it in the next collective: the job would hang. So in a job of
several processes, `stop_together` turns an exception into a notice in JAX's key-value store, which
every other process watches for, reports (naming the failed process) and exits on.
"""
import contextlib
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Optional

import jax

NOTICES = "vit_jax/failed/"  # Key prefix of failure notices: NOTICES + process index -> message.
POLL_SECONDS = 0.5   # How often each process looks for notices.
GRACE_SECONDS = 3.0  # How long a failing process waits for the others to read its notice.


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  return int(value) if value else None


def connect(coordinator_address: Optional[str], num_processes: Optional[int],
            process_id: Optional[int], *, timeout: int) -> None:
  """Joins a multi-host job: from the arguments, else JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID, else (on a multi-host Cloud TPU slice) auto-detected. No-op for one process.

  `timeout` (seconds) bounds the wait for all processes to connect, the silence (at most 100 s)
  after which a process counts as dead (then JAX stops the others), and the wait for the others at
  exit.
  """
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num_processes = num_processes or _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  timeouts = dict(initialization_timeout=timeout, heartbeat_timeout_seconds=min(timeout, 100),
                  shutdown_timeout_seconds=timeout)
  if address or num_processes:
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes,
                               process_id=process_id, **timeouts)
  elif os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:  # A multi-host Cloud TPU slice.
    jax.distributed.initialize(**timeouts)
  else:
    return
  # Context for JAX's abort messages, which say little about the job should another process die.
  print(f"vit_jax: joined as process {jax.process_index()} of {jax.process_count()}; if another "
        f"process fails or dies, this one stops too, within {timeout} s (--distributed_timeout).",
        file=sys.stderr, flush=True)


def _client() -> Any:
  """JAX's coordination-service client (the one Orbax uses too; JAX has no public accessor)."""
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  return distributed.global_state.client


def _exit(message: str) -> None:
  if message:
    print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)  # Not sys.exit: at exit JAX would wait for the other processes.


def _watch(client: Any, me: int, count: int, stop: threading.Event,
           exit_fn: Callable[[str], None]) -> None:
  """Until `stop` is set, polls for other processes' failure notices and exits on the first."""
  while not stop.wait(POLL_SECONDS):
    try:
      notices = client.key_value_dir_get(NOTICES)
    except Exception:  # pylint: disable=broad-except  # The service is gone: JAX stops this process.
      return
    others = sorted((key, value) for key, value in notices if key != f"{NOTICES}{me}")
    if others:
      exit_fn(f"vit_jax: stopping process {me} of {count} because {others[0][1]}")
      return


@contextlib.contextmanager
def stop_together(client: Any = None, exit_fn: Callable[[str], None] = _exit) -> Iterator[None]:
  """Runs the body; in a job of several processes, any process's failure stops all of them.

  On an exception here (but SystemExit, which the loop raises on every process at the step they
  agreed to stop at): prints the traceback, posts a notice naming this process and the error,
  gives the others GRACE_SECONDS to read it, and exits with status 1 (or JAX aborts it when the
  coordinator, process 0, stops first). On another process's notice: prints it and exits with
  status 1 at once. (`client` and `exit_fn` are for tests.)
  """
  count = jax.process_count()
  client = client if client is not None else (_client() if count > 1 else None)
  if client is None:
    yield
    return
  me = jax.process_index()
  stop = threading.Event()
  watcher = threading.Thread(target=_watch, args=(client, me, count, stop, exit_fn),
                             name="vit_jax-failure-watch", daemon=True)
  watcher.start()
  try:
    yield
  except SystemExit:
    raise  # A stop all processes agreed on (the preemption save): they exit together.
  except BaseException as error:  # pylint: disable=broad-except
    stop.set()
    traceback.print_exc()
    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    notice = f"process {me} of {count} failed ({type(error).__name__}: {detail})"
    print(f"vit_jax: {notice}; stopping the other processes.", file=sys.stderr, flush=True)
    try:
      client.key_value_set(f"{NOTICES}{me}", f"{notice}; its log has the traceback.",
                           allow_overwrite=True)
      # Were this process to exit at once, the others would stop with JAX's abort instead.
      time.sleep(GRACE_SECONDS)
    except Exception:  # pylint: disable=broad-except  # No service left to tell: just stop.
      pass
    exit_fn("")
  finally:
    stop.set()
    watcher.join()
