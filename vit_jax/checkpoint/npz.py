"""Reading the public vit_jax npz format (flat '/'-joined keys, pre-Linen names) into Linen param trees.

Files are checked as they are read: empty, truncated or damaged files, pickled objects and non-finite
weights are refused with an error naming the file (and the array).
"""
import io
import os
from typing import Any, Union
import zipfile
import zlib

import numpy as np

from vit_jax.checkpoint import big_vision_layout, naming

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


ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # An npz file is a zip archive (the 2nd: empty).
NPY_SIGNATURE = b"\x93NUMPY"
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _not_npz(name: str, why: str) -> ValueError:
  return ValueError(f"{name} is not a readable npz checkpoint: {why}")


def _check_finite(arrays: dict[str, np.ndarray], name: str) -> None:
  """Refuses weights holding NaN or inf: a diverged run or a damaged file, never a usable start."""
  bad = [key for key, value in arrays.items()
         if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all()]
  if bad:
    value = arrays[bad[0]]
    others = f" (and {len(bad) - 1} more array(s): {bad[1:4]})" if len(bad) > 1 else ""
    raise ValueError(
        f"{name}: parameter '{bad[0]}' holds non-finite values ({int(np.isnan(value).sum())} NaN, "
        f"{int(np.isinf(value).sum())} inf of {value.size}){others}. The run that wrote it diverged "
        "or the file is damaged; use another checkpoint.")


def load_flat_npz(path: PathLike) -> dict[str, np.ndarray]:
  """The arrays of an npz file as {key: array}, exactly as stored (no renaming).

  Raises FileNotFoundError for a missing file and ValueError naming the file (and the array) for
  anything else that is not a complete npz archive of finite plain arrays: a directory, an empty,
  truncated or damaged file, pickled objects (refused: loading them can run code), NaN or inf.
  """
  name = os.fspath(path)
  try:
    data = read_bytes(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"no npz checkpoint at {name}") from None
  except IsADirectoryError:
    raise _not_npz(name, "it is a directory; give the path of an .npz file") from None
  except OSError as e:
    raise _not_npz(name, f"it cannot be read ({e})") from e
  if not data:
    raise _not_npz(name, "it is empty (0 bytes); the download or copy probably failed: fetch it again")
  if not data.startswith(ZIP_SIGNATURES):
    kind = ("it is a single .npy array, not an npz archive" if data.startswith(NPY_SIGNATURE) else
            "it does not start like a zip archive (damaged, or another format)")
    raise _not_npz(name, kind)
  try:
    archive = np.load(io.BytesIO(data), allow_pickle=False)
  except _READ_ERRORS as e:
    raise _not_npz(name, f"it is truncated or damaged ({e}); fetch it again") from e
  arrays = {}
  with archive:
    for key in archive.files:
      try:
        arrays[key] = archive[key]
      except _READ_ERRORS as e:
        raise _not_npz(name, f"array '{key}' cannot be read ({e}): the file is damaged, or the array "
                       "holds pickled Python objects, which are refused because loading them can run "
                       "code") from e
  _check_finite(arrays, name)
  return arrays


def load_npz(path: PathLike) -> dict[str, Any]:
  """Loads an npz checkpoint as a nested dict of numpy arrays with in-memory (Linen) names.

  Accepts the published pre-Linen numbering (MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3),
  files already in Linen numbering, and big_vision's ViT layout (big_vision_layout.py); GroupNorm
  scale/bias stored as (1, 1, 1, C) become (C,).
  """
  flat = naming.squeeze_groupnorm(load_flat_npz(path))
  tree = naming.to_linen_names(naming.unflatten(flat))
  return big_vision_layout.to_our_layout(tree, os.fspath(path)) if big_vision_layout.is_big_vision(
      tree) else tree
