"""The command-line flags that join a multi-host job, shared by every command that can run on many
hosts (training, the token-labeling annotator). Defining them imports no JAX, so a command parses its
flags and config before JAX starts; `connect` then joins the job (vit_jax.multihost)."""
from absl import flags

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-host runs (or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes in a multi-host run (or JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in a multi-host run (or JAX_PROCESS_ID).")
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300,
    "Seconds to wait for all processes to connect, for a silent process (at most 100) before the "
    "others stop, and for the others at exit.")


def connect() -> None:
  """Joins the job these flags (or the JAX_* variables, or a Cloud TPU slice) describe; no-op for one
  process."""
  from vit_jax import multihost  # pylint: disable=import-outside-toplevel
  multihost.connect(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                    timeout=_TIMEOUT.value)
