"""Paths as users type them: `~` expanded, URLs (gs://..., s3://...) left as they are.

Shells expand `~` only at the start of a word, so `--output=~/jft` reaches a command as a literal
'~/jft' (which would become a directory named '~'). Every path a user gives goes through `expand`.
"""
import os
import re
from typing import Optional

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
  """True for 'scheme://...' paths (gs://, s3://, file://, ...), which are not local files."""
  return bool(_URL.match(path))


def expand(path: Optional[str]) -> Optional[str]:
  """The path with a leading `~` or `~user` expanded; URLs, '' and None unchanged."""
  if not path or is_url(path):
    return path
  return os.path.expanduser(path)
