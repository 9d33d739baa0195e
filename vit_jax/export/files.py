"""Writing export files whole: a reader never sees half a file (local: temporary name, then rename)."""
import os
from typing import Any

from vit_jax.checkpoint import npz


def write_bytes(path: Any, data: bytes) -> None:
  """Writes `data` to `path`, a local path (created atomically, parents made) or a URL (tf.io.gfile)."""
  path = os.fspath(path)
  if npz.is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(data)
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)
