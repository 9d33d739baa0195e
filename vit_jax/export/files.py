"""Writing export files whole: a reader never sees half a file (local: temporary name, then rename)."""
import os
from typing import Any

from vit_jax import whole_files
from vit_jax.checkpoint import npz


def write_bytes(path: Any, data: bytes) -> None:
  """Writes `data` to `path`, a local path (created atomically, parents made) or a URL (tf.io.gfile)."""
  path = os.fspath(path)
  if npz.is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(data)
    return
  whole_files.write_bytes(path, data)
