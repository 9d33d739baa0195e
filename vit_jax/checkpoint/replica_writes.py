"""On CPU hosts a replicated array is written whole by one device, not split over its replicas.

Orbax's replica-parallel saving (its default on CPU and TPU, not on GPU) has each replica of a
replicated array write one slice of it, so that accelerators share the device-to-host copy. On a
CPU host every "device" already lives in host memory: the split buys nothing and costs one
dispatched slice program per array and device, plus a compilation per shape on a process's first
save (measured for ViT-micro on 8 CPU devices: first save 3.6 s -> 0.8 s, later saves 0.4-0.6 s ->
0.2 s). The files written are the same either way; only who writes which bytes changes.
"""
import functools
import logging

import jax
import orbax.checkpoint as ocp
# The metadata store that Orbax's own default jax.Array handler is built with (pinned orbax version),
# so that a checkpoint keeps its per-array metadata files exactly as with the default handler.
from orbax.checkpoint._src.metadata import array_metadata_store


@functools.cache  # Once per process: Orbax logs a warning at every override.
def write_replicas_whole_on_cpu() -> bool:
  """On the CPU backend, registers Orbax's jax.Array handler without replica-parallel writes (for
  this process: Orbax keeps one registry); elsewhere leaves Orbax's default. Returns whether it did."""
  if jax.default_backend() != "cpu":
    return False
  handler = ocp.type_handlers.ArrayHandler(
      use_replica_parallel=False, array_metadata_store=array_metadata_store.Store())
  absl_logger = logging.getLogger("absl")  # Orbax warns of every override, meant or not.
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
  finally:
    absl_logger.setLevel(level)
  return True
