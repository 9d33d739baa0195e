"""Reading the public vit_jax npz format (flat '/'-joined keys, pre-Linen names) into Linen param trees."""
import io
import os
from typing import Any, Union

import numpy as np

from vit_jax.checkpoint import naming

PathLike = Union[str, os.PathLike]


def is_remote(path: PathLike) -> bool:
  """True for URLs such as gs://bucket/file, which are read through tf.io.gfile."""
  return "://" in os.fspath(path)


def resolve(path: PathLike) -> str:
  """Local paths made absolute (Orbax refuses relative ones); URLs such as gs://... unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def read_bytes(path: PathLike) -> bytes:
  """Reads a whole file, local or remote (gs:// via tf.io.gfile, imported only when needed)."""
  path = os.fspath(path)
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  with open(path, "rb") as f:
    return f.read()


def load_flat_npz(path: PathLike) -> dict[str, np.ndarray]:
  """The arrays of an npz file as {key: array}, exactly as stored (no renaming)."""
  try:
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except FileNotFoundError:
    raise FileNotFoundError(f"no npz checkpoint at {os.fspath(path)}") from None
  except (ValueError, OSError) as e:
    raise ValueError(f"{os.fspath(path)} is not a readable npz checkpoint: {e}") from e


def load_npz(path: PathLike) -> dict[str, Any]:
  """Loads an npz checkpoint as a nested dict of numpy arrays with in-memory (Linen) names.

  Accepts the published pre-Linen numbering (MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3)
  and files already in Linen numbering; GroupNorm scale/bias stored as (1, 1, 1, C) become (C,).
  """
  flat = naming.squeeze_groupnorm(load_flat_npz(path))
  return naming.to_linen_names(naming.unflatten(flat))
