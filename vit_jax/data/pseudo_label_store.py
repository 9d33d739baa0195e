"""A teacher's pseudo-labels on disk: its class probabilities per shard, then the selected labels.

A directory made by `python -m vit_jax.pseudo_labels` for one split of one source:

  manifest.json                what the labels are for and how they were chosen (Manifest): source,
                               split, class count, example and shard counts, teacher, mode ('soft' or
                               'hard'), confidence threshold, examples per class; once selected, the
                               counts (Counts)
  shard-00003-of-00016.npz     the teacher's view of the examples Source.read(split, 3, 16) yields:
                                 keys           (n,) the source's key of each example (str)
                                 probabilities  (n, K) its softmax (float16)
  labels.npz                   the selection, one row per kept example (pseudo_label_selection.py):
                                 keys    (u,) str, each once
                                 labels  soft: (u, K) probabilities (float16); hard: (u,) class ids
                                 copies  (u,) int32 >= 1, how often the example appears per epoch

Each process writes the shards it reads, each whole or not at all (a temporary name, then a rename),
so a rerun writes only the missing ones; when all are there, process 0 selects and writes
labels.npz, then the manifest with its counts: a directory is finished when its manifest has counts.
A rerun into a directory made for something else is refused naming what differs.
"""
import dataclasses
import json
import os
import zipfile
from typing import Optional, Sequence

import numpy as np
from vit_jax import whole_files

MANIFEST = "manifest.json"
LABELS = "labels.npz"
FORMAT = 1
MODES = ("soft", "hard")


@dataclasses.dataclass(frozen=True)
class Counts:
  """What the selection kept (written when it is done)."""
  examples: int       # examples the teacher labelled (the split, minus undecodable ones)
  confident: int      # of them, with max probability >= threshold
  kept: int           # distinct examples kept
  rows: int           # examples per epoch, copies included
  per_class: tuple    # rows per (predicted) class
  empty_classes: tuple = ()  # classes without any confident example (balancing cannot fill them)


@dataclasses.dataclass(frozen=True)
class Manifest:
  """What a directory of pseudo-labels was made for; usable only where all of it matches."""
  source: str        # config.data.source, plus the dataset name where it has one ('tfds:cifar10')
  split: str         # the pseudo-labelled split, e.g. 'train[10%:]'
  num_classes: int
  examples: int      # in the split
  shards: int
  teacher: str       # the checkpoint that labelled them
  mode: str          # 'soft': the teacher's distribution; 'hard': its top class
  threshold: float   # examples whose max probability is below it are dropped
  per_class: int     # 0: every confident example once; K: K rows per class (top-K, or duplicated)
  counts: Optional[Counts] = None
  format: int = FORMAT

  def request(self) -> "Manifest":
    """The manifest without its counts: what a (re)run asks for."""
    return dataclasses.replace(self, counts=None)


class PseudoLabelError(ValueError):
  """Pseudo-labels that cannot serve: missing, unfinished, made for other data, or damaged."""


def shard_name(shard: int, shards: int) -> str:
  return f"shard-{shard:05d}-of-{shards:05d}.npz"


def read_manifest(directory: str) -> Manifest:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise PseudoLabelError(f"{directory} holds no pseudo-labels ({MANIFEST} is missing): make them "
                           "with python -m vit_jax.pseudo_labels")
  try:
    with open(path) as f:
      fields = json.load(f)
    if fields.get("counts") is not None:
      counts = fields["counts"]
      fields["counts"] = Counts(**{**counts, "per_class": tuple(counts["per_class"]),
                                   "empty_classes": tuple(counts.get("empty_classes", ()))})
    return Manifest(**fields)
  except (ValueError, TypeError, KeyError) as e:
    raise PseudoLabelError(f"{path} is not a pseudo-label manifest ({type(e).__name__}: {e})") from e


def write_manifest(directory: str, manifest: Manifest) -> None:
  text = json.dumps(dataclasses.asdict(manifest), indent=1).encode()
  whole_files.write(os.path.join(directory, MANIFEST), lambda f: f.write(text))


def check(found: Manifest, wanted: Manifest, directory: str, fields: Sequence[str]) -> None:
  differing = [f"{name} {getattr(found, name)!r} (wanted {getattr(wanted, name)!r})"
               for name in fields if getattr(found, name) != getattr(wanted, name)]
  if differing:
    raise PseudoLabelError(f"the pseudo-labels in {directory} were made for something else: "
                           + "; ".join(differing))


REQUEST_FIELDS = ("format", "source", "split", "num_classes", "examples", "shards", "teacher", "mode",
                  "threshold", "per_class")


def start(directory: str, manifest: Manifest) -> Manifest:
  """Creates `directory` for `manifest`, or checks that the labels already there were asked for in
  the same way (a rerun resumes them; anything else is an error naming what differs, so that one
  directory never mixes two teachers or two selections). Returns the manifest found or written."""
  if manifest.mode not in MODES:
    raise ValueError(f"mode {manifest.mode!r}: use one of {MODES}")
  os.makedirs(directory, exist_ok=True)
  if os.path.exists(os.path.join(directory, MANIFEST)):
    found = read_manifest(directory)
    check(found, manifest, directory, REQUEST_FIELDS)
    return found
  write_manifest(directory, manifest.request())
  return manifest.request()


def is_written(directory: str, shard: int, shards: int) -> bool:
  return os.path.exists(os.path.join(directory, shard_name(shard, shards)))


def write_shard(directory: str, manifest: Manifest, shard: int, keys: Sequence[str],
                probabilities: np.ndarray) -> str:
  """Writes one shard's probabilities atomically; returns its path."""
  if probabilities.shape != (len(keys), manifest.num_classes):
    raise ValueError(f"shard {shard}: probabilities of shape {probabilities.shape} for {len(keys)} "
                     f"keys and {manifest.num_classes} classes")
  path = os.path.join(directory, shard_name(shard, manifest.shards))
  whole_files.write(path, lambda f: np.savez(f, keys=np.asarray(keys, dtype=str),
                                         probabilities=probabilities.astype(np.float16)))
  return path


def _load_npz(path: str, names: Sequence[str], what: str) -> list:
  try:
    with np.load(path, allow_pickle=False) as arrays:
      return [arrays[name] for name in names]
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise PseudoLabelError(f"{what} {path} is damaged ({type(e).__name__}: {e}); delete it and "
                           "rerun python -m vit_jax.pseudo_labels with the same arguments") from e


def read_shards(directory: str, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
  """(keys (n,), probabilities (n, K) float32) of every shard, in shard order; a missing or damaged
  shard is an error naming it."""
  names = [shard_name(s, manifest.shards) for s in range(manifest.shards)]
  missing = [name for name in names if not os.path.exists(os.path.join(directory, name))]
  if missing:
    raise PseudoLabelError(f"{directory} lacks {len(missing)} of {manifest.shards} shards (e.g. "
                           f"{missing[0]}): every process must finish its shards; rerun the same "
                           "command to write them")
  keys, probabilities = [], []
  for name in names:
    shard_keys, shard_probabilities = _load_npz(
        os.path.join(directory, name), ("keys", "probabilities"), "pseudo-label shard")
    keys.append(shard_keys)
    probabilities.append(shard_probabilities.astype(np.float32))
  return np.concatenate(keys), np.concatenate(probabilities)


def write_labels(directory: str, manifest: Manifest, keys: Sequence[str], labels: np.ndarray,
                 copies: np.ndarray, counts: Counts) -> Manifest:
  """Writes the selection (labels.npz), then the manifest with its counts; returns that manifest."""
  want = (len(keys), manifest.num_classes) if manifest.mode == "soft" else (len(keys),)
  if labels.shape != want or copies.shape != (len(keys),):
    raise ValueError(f"labels {labels.shape} and copies {copies.shape} for {len(keys)} keys in "
                     f"mode {manifest.mode!r}")
  stored = labels.astype(np.float16 if manifest.mode == "soft" else np.int32)
  whole_files.write(os.path.join(directory, LABELS), lambda f: np.savez(
      f, keys=np.asarray(keys, dtype=str), labels=stored, copies=copies.astype(np.int32)))
  finished = dataclasses.replace(manifest, counts=counts)
  write_manifest(directory, finished)
  return finished


@dataclasses.dataclass
class PseudoLabels:
  """The selected pseudo-labels of a finished directory, as training reads them."""
  manifest: Manifest
  keys: np.ndarray     # (u,) str
  targets: np.ndarray  # (u, K) float32 distributions: soft labels normalised, hard ones one-hot
  copies: np.ndarray   # (u,) int32

  @property
  def rows(self) -> int:
    return int(self.copies.sum())


def load(directory: str) -> PseudoLabels:
  """Reads a finished directory; an unfinished one, a damaged labels file or one that disagrees
  with its manifest is an error naming it."""
  manifest = read_manifest(directory)
  path = os.path.join(directory, LABELS)
  if manifest.counts is None or not os.path.exists(path):
    raise PseudoLabelError(f"the pseudo-labelling in {directory} has not finished (no counts in "
                           f"its {MANIFEST}): rerun python -m vit_jax.pseudo_labels with the same "
                           "arguments to finish it")
  keys, labels, copies = _load_npz(path, ("keys", "labels", "copies"), "pseudo-label file")
  if manifest.mode == "soft":
    targets = labels.astype(np.float32)
    targets /= np.maximum(targets.sum(axis=1, keepdims=True), 1e-12)  # float16 sums are near 1
  else:
    targets = np.eye(manifest.num_classes, dtype=np.float32)[labels]
  if targets.shape != (len(keys), manifest.num_classes) or int(copies.sum()) != manifest.counts.rows:
    raise PseudoLabelError(f"{path} holds {targets.shape} labels and {int(copies.sum())} rows; its "
                           f"manifest says {manifest.num_classes} classes and {manifest.counts.rows} "
                           "rows: delete the directory and label again")
  return PseudoLabels(manifest, keys, targets, copies.astype(np.int32))
