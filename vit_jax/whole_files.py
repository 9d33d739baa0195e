"""Files that appear whole or not at all: written under a temporary name, then renamed into place.

A reader (a resumed run, another host, a user) then sees the old file or the new one, never half of
one; a killed writer leaves at most a temporary file beside it (named PATH.tmp-<pid>).
"""
import os
from typing import IO, Callable


def write(path: str, fill: Callable[[IO], None], *, binary: bool = True) -> str:
  """Writes `path` whole with fill(open file); makes its directory; returns the path."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "wb" if binary else "w") as f:
    fill(f)
  os.replace(temporary, path)
  return path


def write_text(path: str, text: str) -> str:
  return write(path, lambda f: f.write(text), binary=False)


def write_bytes(path: str, data: bytes) -> str:
  return write(path, lambda f: f.write(data))
