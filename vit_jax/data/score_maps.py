"""A teacher's stored score maps for token labeling: sharded, keyed by example, resumable, checked.

A directory of maps made for one split of one source:

  manifest.json                  what the maps are for (Manifest): source, split, class count, top-k,
                                 grid, example and shard counts, teacher
  shard-00003-of-00016.npz       the maps of the examples that Source.read(split, 3, 16) yields:
                                   keys     (n,) the source's key of each example (str)
                                   values   (n, K, H', W') top-k logits per grid cell (float16)
                                   indices  (n, K, H', W') their class ids (int16, int32 beyond 32767)

Each host writes the shards it reads. A shard file appears whole or not at all (written under a
temporary name, then renamed), so a killed annotator leaves complete shards only and a rerun writes
the missing ones; the maps of an example do not depend on which run wrote them.

Training joins each train batch with its examples' maps (`join`): the batch then carries, besides
'image' and 'label', SCORE_VALUES (B, K, H', W') and SCORE_INDICES (B, K, H', W') of each example's
map and CROP (B, 4), the region the image shows, in the convention of the official token-labeling
code: the source image and its map are mirrored first (the map's W axis) where the image was
mirrored, and CROP = (top, left, height, width) as fractions of that source image.
"""
import dataclasses
import json
import os
import zipfile
from typing import Optional, Sequence

import numpy as np

from vit_jax import whole_files
from vit_jax.data.batch_keys import BOX, CROP, EXAMPLE_KEY, FLIPPED, SCORE_INDICES, SCORE_VALUES
MANIFEST = "manifest.json"
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Manifest:
  """What a directory of maps was made for; maps are usable only where all of it matches."""
  source: str        # config.data.source, plus the dataset name where it has one ('tfds:cifar10')
  split: str
  num_classes: int
  top_k: int
  grid: tuple[int, int]
  examples: int      # in the split
  shards: int
  teacher: str = ""  # what made them (a checkpoint path), for the record
  format: int = FORMAT
  value_dtype: str = "float16"  # of the stored logits, as the official maps ('float32' keeps all)

  def index_dtype(self) -> np.dtype:
    return np.dtype(np.int16 if self.num_classes <= np.iinfo(np.int16).max + 1 else np.int32)

  def map_shape(self) -> tuple[int, int, int]:
    return (self.top_k, *self.grid)


class ScoreMapError(ValueError):
  """Maps that cannot serve this run: made for other data, incomplete, or damaged (named)."""


def shard_name(shard: int, shards: int) -> str:
  return f"shard-{shard:05d}-of-{shards:05d}.npz"


def read_manifest(directory: str) -> Manifest:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise ScoreMapError(f"{directory} holds no score maps ({MANIFEST} is missing): make them with "
                        "python -m vit_jax.token_labels")
  try:
    with open(path) as f:
      fields = json.load(f)
    fields["grid"] = tuple(fields["grid"])
    return Manifest(**fields)
  except (ValueError, TypeError, KeyError) as e:
    raise ScoreMapError(f"{path} is not a score-map manifest ({type(e).__name__}: {e})") from e


def start(directory: str, manifest: Manifest) -> None:
  """Creates `directory` for `manifest`, or checks that the maps already there were made for the
  same thing (a rerun resumes them); a different manifest is an error naming what differs."""
  os.makedirs(directory, exist_ok=True)
  if os.path.exists(os.path.join(directory, MANIFEST)):
    check(read_manifest(directory), manifest, directory)
    return
  whole_files.write_text(os.path.join(directory, MANIFEST), json.dumps(
      {**dataclasses.asdict(manifest), "grid": list(manifest.grid)}, indent=1))


def check(found: Manifest, wanted: Manifest, directory: str, *,
          fields: Sequence[str] = ("format", "source", "split", "num_classes", "examples", "top_k",
                                   "grid", "shards")) -> None:
  differing = [f"{name} {getattr(found, name)!r} (wanted {getattr(wanted, name)!r})"
               for name in fields if getattr(found, name) != getattr(wanted, name)]
  if differing:
    raise ScoreMapError(f"the score maps in {directory} were made for other data: "
                        + "; ".join(differing))


def is_written(directory: str, shard: int, shards: int) -> bool:
  return os.path.exists(os.path.join(directory, shard_name(shard, shards)))


def write_shard(directory: str, manifest: Manifest, shard: int, keys: Sequence[str],
                values: np.ndarray, indices: np.ndarray) -> str:
  """Writes one shard's maps atomically; returns its path."""
  n = len(keys)
  shape = (n, *manifest.map_shape())
  if values.shape != shape or indices.shape != shape:
    raise ValueError(f"shard {shard}: maps of shape {values.shape} / {indices.shape} for {n} keys, "
                     f"expected {shape}")
  path = os.path.join(directory, shard_name(shard, manifest.shards))
  return whole_files.write(path, lambda f: np.savez(
      f, keys=np.asarray(keys, dtype=str), values=values.astype(manifest.value_dtype),
      indices=indices.astype(manifest.index_dtype())))


@dataclasses.dataclass
class ScoreMaps:
  """All maps of a directory in memory, looked up by example key."""
  manifest: Manifest
  values: np.ndarray    # (N, K, H', W') Manifest.value_dtype
  indices: np.ndarray   # (N, K, H', W')
  rows: dict[str, int]  # key -> row

  def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values, indices) of these examples, in order; an example without maps is an error naming
    it (never a silent zero target)."""
    try:
      rows = [self.rows[key] for key in keys]
    except KeyError as e:
      raise ScoreMapError(f"no score map for example {e.args[0]!r} of {self.manifest.source} "
                          f"{self.manifest.split}") from None
    return self.values[rows], self.indices[rows]


def flip_first_crop(box: np.ndarray, mirrored) -> np.ndarray:
  """(B, 4) boxes of flip-then-crop: the same images as crop-then-flip with `box` (data/geometry.py),
  described as the official token-labeling code does (the source and its map mirrored first, then
  cropped): the box mirrored where `mirrored`."""
  box = np.array(box, np.float32)
  mirrored = np.asarray(mirrored, bool)
  box[mirrored, 1] = 1.0 - box[mirrored, 1] - box[mirrored, 3]
  return box


def join(batch: dict, maps: "ScoreMaps") -> dict:
  """A train batch that carries EXAMPLE_KEY and its augmentation's geometry (BOX, FLIPPED) -> the
  batch with its examples' maps and crops (SCORE_VALUES, SCORE_INDICES, CROP; see the module doc)
  instead. An example without maps is an error naming it."""
  batch = dict(batch)
  keys = [key.decode() if isinstance(key, bytes) else str(key) for key in batch.pop(EXAMPLE_KEY)]
  box, mirrored = batch.pop(BOX), np.asarray(batch.pop(FLIPPED), bool)
  values, indices = maps.lookup(keys)
  batch[SCORE_VALUES] = np.where(mirrored[:, None, None, None], values[..., ::-1], values)
  batch[SCORE_INDICES] = np.where(mirrored[:, None, None, None], indices[..., ::-1], indices)
  batch[CROP] = flip_first_crop(box, mirrored)
  return batch


def load(directory: str, wanted: Optional[Manifest] = None) -> ScoreMaps:
  """Reads every shard of `directory`. Maps made for other data than `wanted` (source, split, class
  count, example count), missing shards, a damaged shard or missing examples are errors naming them."""
  manifest = read_manifest(directory)
  if wanted is not None:
    check(manifest, wanted, directory,
          fields=("format", "source", "split", "num_classes", "examples"))
  names = [shard_name(s, manifest.shards) for s in range(manifest.shards)]
  missing = [name for name in names if not os.path.exists(os.path.join(directory, name))]
  if missing:
    raise ScoreMapError(f"{directory} lacks {len(missing)} of {manifest.shards} shards (e.g. "
                        f"{missing[0]}): rerun the annotator with the same arguments to finish them")
  keys, values, indices = [], [], []
  for name in names:
    path = os.path.join(directory, name)
    try:
      with np.load(path, allow_pickle=False) as shard:
        keys.append(shard["keys"])
        values.append(shard["values"])
        indices.append(shard["indices"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      raise ScoreMapError(f"score-map shard {path} is damaged ({type(e).__name__}: {e}); delete it "
                          "and rerun the annotator to write it again") from e
    if values[-1].shape[1:] != manifest.map_shape():
      raise ScoreMapError(f"score-map shard {path} holds maps of shape {values[-1].shape[1:]}, its "
                          f"manifest says {manifest.map_shape()}")
  keys = np.concatenate(keys)
  if len(keys) != manifest.examples:
    raise ScoreMapError(f"{directory} holds maps of {len(keys)} examples, its manifest says "
                        f"{manifest.examples}")
  rows = {str(key): row for row, key in enumerate(keys)}
  if len(rows) != len(keys):
    seen = set()
    duplicate = next(str(key) for key in keys if str(key) in seen or seen.add(str(key)))
    raise ScoreMapError(f"{directory} holds more than one map for example {duplicate!r}")
  return ScoreMaps(manifest, np.concatenate(values), np.concatenate(indices), rows)
