"""ReaL-style evaluation (Beyer et al. 2020, "Are we done with ImageNet?"): a set of correct classes
per example, read from a labels file, and the accuracy of top-1 predictions against those sets.

The file has the format of the public ImageNet ReaL `real.json`: a JSON list with one entry per
example, each a list of class ids. An empty list marks an example for which no label was judged
correct; it is left out of the accuracy. `real.json` is ordered by the validation file names
(entry 0 is ILSVRC2012_val_00000001). An example finds its entry in one of two ways (`BY`):
  position   entry = the example's position in the split, plus the start of a sliced split
             ('validation[10000:]' starts at entry 10000). Only right when the split's fixed order is
             the file's order. TFDS imagenet2012's validation order is NOT the file-name order:
             reorder the file first (`reorder`; docs/evaluation.md).
  file_name  entry = n - 1 for the name ILSVRC2012_val_<n> in the example's source key (the folder
             source's keys are the image paths), whatever the split's order.
"""
import dataclasses
import json
import re
from typing import Sequence

import numpy as np

BY = ("position", "file_name")
FILE_NAME = re.compile(r"ILSVRC2012_val_(\d+)")


@dataclasses.dataclass(frozen=True)
class RealLabels:
  """The correct classes of every entry of a labels file."""
  path: str
  sets: tuple[frozenset, ...]

  def __len__(self) -> int:
    return len(self.sets)


def _format_error(path: str, problem: str) -> ValueError:
  return ValueError(f"{path}: {problem}; a ReaL labels file is a JSON list with one list of class "
                    "ids per example, as ImageNet ReaL's real.json")


def parse(entries, num_classes: int, path: str = "labels") -> RealLabels:
  """Checks decoded JSON: a list of lists of integer class ids in [0, num_classes)."""
  if not isinstance(entries, list):
    raise _format_error(path, f"holds a {type(entries).__name__}, not a list")
  sets = []
  for i, entry in enumerate(entries):
    if not isinstance(entry, list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                              for c in entry):
      raise _format_error(path, f"entry {i} is {entry!r}, not a list of class ids")
    outside = [c for c in entry if not 0 <= c < num_classes]
    if outside:
      raise ValueError(f"{path}: entry {i} names class {outside[0]}, outside the model's "
                       f"{num_classes} classes: labels made for other data?")
    sets.append(frozenset(entry))
  return RealLabels(path, tuple(sets))


def load(path: str, num_classes: int) -> RealLabels:
  """Reads and checks a labels file (a bad file is an error naming it and the entry at fault)."""
  try:
    with open(path) as f:
      entries = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"no ReaL labels file at {path}: give the path of real.json (or a file "
                            "of that format)") from None
  except json.JSONDecodeError as e:
    raise _format_error(path, f"is not JSON ({e})") from None
  return parse(entries, num_classes, path)


def entries_by_position(positions: np.ndarray, start: int = 0) -> np.ndarray:
  """The entry of each example: its position in the split, from `start` (the slice's first)."""
  return np.asarray(positions, np.int64) + start


def entries_by_file_name(keys: Sequence) -> np.ndarray:
  """The entry of each example: n - 1 for the last ILSVRC2012_val_<n> in its key; a key without
  such a name is an error naming it."""
  entries = np.empty(len(keys), np.int64)
  for i, key in enumerate(keys):
    key = key.decode() if isinstance(key, bytes) else str(key)
    found = FILE_NAME.findall(key)
    if not found:
      raise ValueError(f"example {key!r} carries no ILSVRC2012_val_<n> file name to find its ReaL "
                       "entry by: match examples by='position', or read the validation images from "
                       "a folder (their keys are their paths)")
    entries[i] = int(found[-1]) - 1
  return entries


def reorder(labels: RealLabels, file_names: Sequence[str]) -> list[list[int]]:
  """The entries in the order of `file_names` (each holding ILSVRC2012_val_<n>): a labels file for
  a split read in that order, matched by position (e.g. TFDS imagenet2012's validation split)."""
  entries = entries_by_file_name(file_names)
  beyond = entries[entries >= len(labels)]
  if len(beyond):
    raise ValueError(f"{labels.path} has {len(labels)} entries; file number {beyond[0] + 1} has none")
  return [sorted(labels.sets[e]) for e in entries]


def accuracy(predictions: np.ndarray, entries: np.ndarray, labels: RealLabels) -> dict[str, float]:
  """ReaL accuracy of top-1 predictions: the fraction of the examples with a non-empty set whose
  prediction is in it. Returns {'accuracy', 'examples' (counted), 'without_labels' (left out)}."""
  entries = np.asarray(entries, np.int64)
  beyond = entries[(entries < 0) | (entries >= len(labels))]
  if len(beyond):
    raise ValueError(f"{labels.path} has {len(labels)} entries, and an example needs entry "
                     f"{beyond[0]}: labels made for another split (or a slice of it)?")
  counted = hits = 0
  for prediction, entry in zip(np.asarray(predictions), entries):
    correct = labels.sets[entry]
    if correct:
      counted += 1
      hits += int(prediction) in correct
  return {"accuracy": hits / counted if counted else float("nan"), "examples": float(counted),
          "without_labels": float(len(entries) - counted)}
