"""The npz export: params in the public vit_jax format (pre-Linen names).

The reference codebase, timm's npz loader and big_vision read these files as they read the
published checkpoints. CLI: python -m vit_jax.export --workdir=DIR --output=FILE.npz
"""
import io
from typing import Any, Mapping

from absl import logging
import numpy as np

from vit_jax.checkpoint import layers_layout
from vit_jax.checkpoint import naming
from vit_jax.checkpoint.params import restore_params
from vit_jax.export import files

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
  are written unrolled, one block per layer, as the public format has them. The file is written
  whole (export/files.py).
  """
  flat = naming.flatten(naming.to_public_names(layers_layout.unstack_layers(params)))
  arrays = {key: _to_numpy(key, value) for key, value in flat.items()}
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  files.write_bytes(path, buffer.getvalue())
  return arrays


def save_trained(trained: Any, path: Any) -> dict[str, np.ndarray]:
  """save_npz of a vit_jax.export.trained.Trained's params (the CLI's entry)."""
  return save_npz(trained.params, path)


def export_npz(source: Any, output: Any) -> tuple[int, int]:
  """Restores params from a workdir / step dir / npz and writes them as a public-format npz.

  Returns (number of arrays, number of parameters).
  """
  arrays = save_npz(restore_params(source), output)
  return len(arrays), int(sum(a.size for a in arrays.values()))


def interface(trained: Any) -> dict[str, str]:
  """What the export holds, for the model card (a vit_jax.export.trained.Trained)."""
  out = {"weights": "params in the public vit_jax npz format (pre-Linen names), unrolled layers"}
  if trained.config is not None:
    size = trained.image_size
    out.update(input=f"the model takes float32 [batch, {size}, {size}, 3] (NHWC), preprocessed",
               preprocessing=f"before the model, as the run's eval pipeline: {trained.eval_pipeline}")
  return out
