"""Writes JFT-like multi-label TFRecord shards from an image folder and a labels CSV.

  python -m vit_jax.data.jft_write --images=DIR --labels=labels.csv --output=OUT --split=train \
      [--num_shards=16] [--num_classes=K] [--class_names=names.txt] [--shuffle_seed=0]

labels.csv has a header line `image,labels` and one row per image: its path (relative to --images,
or absolute) and its integer labels separated by spaces, e.g. `n01/img_001.jpg,3 17 512`.
Every image is decoded once with the same decoder as the training pipeline; unreadable ones are
skipped, logged with their path, and listed in OUT/jft_info.json. Rows are shuffled with a fixed
seed before sharding (so a small shuffle buffer at training time still mixes classes).
Run it once per split (e.g. train, then test) into the same OUT.
"""
import argparse
import csv
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from vit_jax import paths
from vit_jax.data import jft


def read_labels_csv(path: str) -> List[Tuple[str, List[int]]]:
  """Rows (image path, labels) of a labels CSV; a malformed row is an error naming its line."""
  rows = []
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["image", "labels"]:
      raise ValueError(f"{path}: the first line must be the header 'image,labels', got {header}.")
    for line, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != 2:
        raise ValueError(f"{path}:{line}: expected 2 columns (image,labels), got {row}.")
      try:
        labels = [int(x) for x in row[1].split()]
      except ValueError:
        raise ValueError(f"{path}:{line}: labels must be integers separated by spaces, "
                         f"got {row[1]!r}.") from None
      rows.append((row[0].strip(), labels))
  return rows


def check_image(data: bytes) -> Optional[str]:
  """None if `data` decodes to an image (as the pipeline decodes it), else the reason it does not."""
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except tf.errors.OpError as e:
    return f"undecodable: {e.message.splitlines()[-1][:200]}"
  if 0 in image.shape:
    return f"empty image of shape {tuple(image.shape)}"
  return None


def readable_examples(images_dir: str, rows: Sequence[Tuple[str, List[int]]],
                      skipped: List[Dict[str, str]]):
  """Yields (path, bytes, labels) of the readable images; appends the others to `skipped`."""
  for rel, labels in rows:
    path = rel if os.path.isabs(rel) else os.path.join(images_dir, rel)
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      reason = f"unreadable file: {e.strerror}"
    else:
      reason = check_image(data)
    if reason is not None:
      skipped.append({"file": rel, "reason": reason})
      logging.warning("Skipped %s (%s); %d skipped so far.", rel, reason, len(skipped))
      continue
    yield rel, data, labels


def write(images_dir: str, labels_csv: str, output: str, split: str = "train",
          num_shards: int = 16, num_classes: Optional[int] = None,
          class_names: Optional[List[str]] = None, shuffle_seed: int = 0) -> dict:
  """The command as a function; returns the written jft_info dict."""
  rows = read_labels_csv(labels_csv)
  if not rows:
    raise ValueError(f"{labels_csv} lists no images.")
  if num_classes is None:
    num_classes = len(class_names) if class_names else 1 + max(max(l, default=-1) for _, l in rows)
    logging.info("num_classes=%d (from %s)", num_classes,
                 "--class_names" if class_names else "the largest label")
  if shuffle_seed >= 0:
    rows = [rows[i] for i in np.random.default_rng(shuffle_seed).permutation(len(rows))]
  skipped: List[Dict[str, str]] = []
  info = jft.write_split(output, split, readable_examples(images_dir, rows, skipped),
                         num_classes=num_classes, num_shards=num_shards,
                         class_names=class_names, skipped=skipped)
  written = sum(f["num_examples"] for f in info["splits"][split]["files"])
  if not written:
    raise ValueError(f"None of the {len(rows)} images listed in {labels_csv} could be read "
                     f"(first: {skipped[0]}); check --images.")
  print(f"wrote {written} examples of split {split!r} in {num_shards} shards to {output}; "
        f"skipped {len(skipped)} unreadable images (listed in {jft.INFO_FILE})")
  return info


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", required=True, type=paths.expand,
                      help="directory the CSV paths are relative to")
  parser.add_argument("--labels", required=True, type=paths.expand, help="CSV with header image,labels")
  parser.add_argument("--output", required=True, type=paths.expand, help="dataset directory to write")
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_shards", type=int, default=16)
  parser.add_argument("--num_classes", type=int, default=None,
                      help="default: number of --class_names, else the largest label + 1")
  parser.add_argument("--class_names", default=None, type=paths.expand,
                      help="text file, one class name per line")
  parser.add_argument("--shuffle_seed", type=int, default=0, help="-1 keeps the CSV order")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  names = None
  if args.class_names:
    with open(args.class_names) as f:
      names = [line.strip() for line in f if line.strip()]
  write(args.images, args.labels, args.output, args.split, args.num_shards, args.num_classes,
        names, args.shuffle_seed)


if __name__ == "__main__":
  main()
