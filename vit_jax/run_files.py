"""What a training run leaves beside its checkpoints for the commands that use it later: its config
(config.json, written by the trainer) and its class names (class_names.json), found from any path a
user gives for the checkpoint.
"""
import json
import os
from typing import Optional, Sequence

import ml_collections

from vit_jax.checkpoint.manager import CHECKPOINT_SUBDIR
from vit_jax import whole_files

CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"


def find_workdir(checkpoint: str) -> Optional[str]:
  """The training workdir a checkpoint path lies in: the workdir itself, its checkpoints/ directory
  or a step directory in it; None for anything else (an .npz file)."""
  path = os.path.normpath(os.fspath(checkpoint))  # as the user wrote it, for messages
  parent = os.path.dirname(os.path.abspath(path))
  candidates = [path]
  if os.path.basename(os.path.abspath(path)) == CHECKPOINT_SUBDIR:
    candidates.append(os.path.dirname(path) or os.path.dirname(os.path.abspath(path)))
  if os.path.basename(parent) == CHECKPOINT_SUBDIR:
    candidates.append(os.path.dirname(os.path.dirname(path)) or os.path.dirname(parent))
  for candidate in candidates:
    if os.path.isfile(os.path.join(candidate, CONFIG_FILE)):
      return candidate
  return None


def _tuples(value):
  if isinstance(value, dict):
    return {key: _tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(item) for item in value)
  return value


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved, its lists read back as the tuples configs hold (JSON has no
  tuples)."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def write_class_names(workdir: str, names: Sequence[str]) -> str:
  """Writes the names (a JSON list, class id i -> names[i]) atomically; returns the file's path."""
  return whole_files.write_text(os.path.join(workdir, CLASS_NAMES_FILE),
                                json.dumps([str(name) for name in names], indent=0) + "\n")


def read_class_names(path: str, num_classes: int) -> list[str]:
  """The names in a class-names file (a JSON list, or an object mapping class ids to names, or a text
  file with one name per line); a file naming another number of classes is an error naming both."""
  with open(path) as f:
    text = f.read()
  try:
    names = json.loads(text)
  except json.JSONDecodeError:
    names = [line.strip() for line in text.splitlines() if line.strip()]
  if isinstance(names, dict):
    missing = [i for i in range(num_classes) if str(i) not in names]
    if missing or len(names) != num_classes:
      raise ValueError(f"{path} maps {len(names)} class ids to names, but the model has {num_classes} "
                       "classes: give a file with one name for each class id 0..K-1")
    names = [names[str(i)] for i in range(num_classes)]
  if not isinstance(names, list) or len(names) != num_classes:
    count = len(names) if isinstance(names, list) else "no list of"
    raise ValueError(f"{path} holds {count} class names, but the model has {num_classes} classes: "
                     "give the class names of the data the checkpoint was trained on")
  return [str(name) for name in names]


def class_names_of(checkpoint: str, num_classes: int, names_file: str = "") -> tuple[list[str], str]:
  """(names, where they come from): `names_file` if given, else the class_names.json of the run the
  checkpoint belongs to, else the class ids."""
  if not names_file:
    workdir = find_workdir(checkpoint)
    candidate = os.path.join(workdir, CLASS_NAMES_FILE) if workdir else ""
    names_file = candidate if candidate and os.path.isfile(candidate) else ""
  if names_file:
    return read_class_names(names_file, num_classes), names_file
  return [str(i) for i in range(num_classes)], "class ids (no class names saved with the checkpoint)"
