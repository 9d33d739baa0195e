"""Export params for downstream use: an npz in the public vit_jax format (pre-Linen names).

The reference codebase, timm's npz loader and big_vision read these files as they read the
published checkpoints. CLI: python -m vit_jax.export --workdir=DIR --output=FILE.npz
"""
import io
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from vit_jax import paths
from vit_jax.checkpoint import layers_layout
from vit_jax.checkpoint import naming
from vit_jax.checkpoint import npz
from vit_jax.checkpoint.params import restore_params

# Dtypes numpy itself knows; others (bfloat16, float8 from ml_dtypes) cannot round-trip through npz.
_NUMPY_KINDS = "biufc"


def _to_numpy(path: str, value: Any) -> np.ndarray:
  array = np.asarray(value)
  if array.dtype.kind not in _NUMPY_KINDS or array.dtype.name == "bfloat16":
    logging.warning("Exporting %s (%s) as float32: npz readers do not know %s.", path,
                    array.dtype, array.dtype)
    array = array.astype(np.float32)
  return array


def save_npz(params: Mapping[str, Any], path: Any) -> dict[str, np.ndarray]:
  """Writes params as a flat npz with '/'-joined public (pre-Linen) keys; returns what it wrote.

  The exact inverse of vit_jax.checkpoint.load_npz. Params must be unboxed (nn.unbox); scanned layers
  are written unrolled, one block per layer, as the public format has them. Local files
  are written to a temporary name and renamed, so a reader never sees half a file.
  """
  flat = naming.flatten(naming.to_public_names(layers_layout.unstack_layers(params)))
  arrays = {key: _to_numpy(key, value) for key, value in flat.items()}
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  path = os.fspath(path)
  if npz.is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(buffer.getvalue())
  else:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
      f.write(buffer.getvalue())
    os.replace(tmp, path)
  return arrays


def export_npz(source: Any, output: Any) -> tuple[int, int]:
  """Restores params from a workdir / step dir / npz and writes them as a public-format npz.

  Returns (number of arrays, number of parameters).
  """
  arrays = save_npz(restore_params(source), output)
  return len(arrays), int(sum(a.size for a in arrays.values()))


def define_flags() -> None:
  """The CLI flags; defined on demand so that importing this module never clashes with other CLIs."""
  flags.DEFINE_string("workdir", None, "Training workdir; exports its newest restorable checkpoint.")
  flags.DEFINE_string(
      "checkpoint", None, "A specific Orbax step directory (or checkpoint dir, or .npz) to export.")
  flags.DEFINE_string("output", None, "The .npz file to write.")


def main(argv: Sequence[str]) -> None:
  """Exports --workdir or --checkpoint to --output and prints what it wrote."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir, checkpoint, output = (paths.expand(flags.FLAGS[name].value)
                                 for name in ("workdir", "checkpoint", "output"))
  if bool(workdir) == bool(checkpoint):
    raise app.UsageError("pass exactly one of --workdir or --checkpoint")
  if not output:
    raise app.UsageError("--output=FILE.npz is required")
  source = workdir or checkpoint
  num_arrays, num_params = export_npz(source, output)
  print(f"Wrote {output}: {num_arrays} arrays, {num_params:,} parameters (from {source}).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
