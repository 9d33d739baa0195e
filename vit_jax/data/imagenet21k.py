"""ImageNet-21k as a TFDS dataset, built from the official release as users have it on disk.

The release (fall11 `fall11_whole.tar`, or winter21 `winter21_whole.tar.gz`) unpacks into one tar
per synset, `n01440764.tar`, ..., each holding that synset's JPEGs. Put those tars in a directory
(directly, or in its single subdirectory such as `winter21_whole/`) and build:

  python -m vit_jax.data.imagenet21k --manual_dir=DIR_OF_TARS --data_dir=TFDS_DIR [--config=fall11]

Labels are the positions of the synset ids in sorted order (21,843 classes for fall11, however many
tars there are in general); the ids are the ClassLabel names. Every image is checked while building:
PNGs saved under a .JPEG name and CMYK JPEGs are re-encoded as RGB JPEGs (as TFDS's imagenet2012
builder does), and unreadable or truncated files are skipped, logged with their tar and member name,
and listed in the dataset's metadata ('skipped'). A synset tar that cannot be read to its end
(truncated or damaged) keeps the files before the break and is listed in 'broken_tars' (with
--strict, or Imagenet21k.strict, the build stops naming it instead); a file name repeated within one
tar keeps its first copy and is listed in 'duplicates'. The release has no validation split: hold one out
by slicing, e.g. config.data.train_split='train[102400:]' and test_split='train[:102400]'.
Train with config.data.source='tfds', name='imagenet21k' (or 'imagenet21k/winter21'),
data_dir=TFDS_DIR.
"""
import argparse
import io
import logging
import os
import re
import tarfile
import zlib
from typing import Iterator, List, Optional, Tuple

from PIL import Image
import tensorflow_datasets as tfds

from vit_jax import paths

_SYNSET_TAR = re.compile(r"^n\d{8}\.tar$")


def find_synset_tars(manual_dir: str) -> List[str]:
  """Paths of the n########.tar files in manual_dir or in its one subdirectory, sorted by id."""
  def tars_in(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if _SYNSET_TAR.match(f))
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(
        f"manual_dir {manual_dir!r} does not exist.\n{Imagenet21k.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  tars = tars_in(manual_dir)
  if not tars:
    subdirs = [os.path.join(manual_dir, d) for d in os.listdir(manual_dir)
               if os.path.isdir(os.path.join(manual_dir, d))]
    if len(subdirs) == 1:
      tars = tars_in(subdirs[0])
  if not tars:
    raise FileNotFoundError(f"No synset tars (n01440764.tar, ...) in {manual_dir}.\n"
                            f"{Imagenet21k.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return tars


class BrokenTarError(IOError):
  """A synset tar that cannot be read to its end; the message names it."""


def tar_files(tar_path: str, duplicates: List[str]) -> Iterator[Tuple[str, bytes]]:
  """(member name, bytes) of each regular file of a tar, streamed in order.

  A name already seen in this tar is skipped and appended to `duplicates` as '<tar>/<name>' (the
  example keys are '<tar>/<name>', which must be unique). Raises BrokenTarError naming the tar when
  it cannot be read to its end, after yielding the files before the break.
  """
  tar_name = os.path.basename(tar_path)
  seen = set()
  try:
    with tarfile.open(tar_path, mode="r|*") as archive:  # Streamed: no index of the members.
      for member in archive:
        if not member.isfile():
          continue
        data = archive.extractfile(member).read()
        if member.name in seen:
          duplicates.append(f"{tar_name}/{member.name}")
          logging.warning("Skipped %s/%s: a second file of that name in %s (the first is kept).",
                          tar_name, member.name, tar_name)
          continue
        seen.add(member.name)
        yield member.name, data
  except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
    raise BrokenTarError(f"{tar_name} cannot be read past its first {len(seen)} files "
                         f"({type(e).__name__}: {e})") from e


def normalize_image(data: bytes) -> Tuple[Optional[bytes], str]:
  """(JPEG bytes or None, note): RGB/gray JPEGs as they are, other images re-encoded, None if bad.

  Decodes the whole file (at 1/8 scale for JPEGs, which still reads every byte) so truncated files
  are caught here rather than at training time.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format == "JPEG" and image.mode in ("RGB", "L"):
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return data, ""
      rgb = image.convert("RGB")  # Loads the full image (PNG, CMYK JPEG, GIF, ...).
  except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "not a readable image".
    return None, f"{type(e).__name__}: {e}"
  out = io.BytesIO()
  rgb.save(out, "JPEG", quality=95)
  return out.getvalue(), f"re-encoded {image.format} {image.mode} as RGB JPEG"


class Imagenet21k(tfds.core.GeneratorBasedBuilder):
  """ImageNet-21k (fall11 or winter21 release) from its per-synset tars; one 'train' split."""

  VERSION = tfds.core.Version("1.0.0")
  strict = False  # True: a synset tar that cannot be read to its end stops the build (BrokenTarError).
  RELEASE_NOTES = {"1.0.0": "Initial release: labels are sorted synset ids."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="fall11", description="fall11_whole: 21,843 synsets."),
      tfds.core.BuilderConfig(name="winter21", description="winter21_whole (fewer synsets)."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the ImageNet-21k release from https://image-net.org (an account is needed): fall11
(fall11_whole.tar) or winter21 (winter21_whole.tar.gz). Unpack it so that the per-synset tars
(n01440764.tar, ...) lie directly in manual_dir, or in its only subdirectory:
  mkdir -p DIR && tar -xf fall11_whole.tar -C DIR
Then build with --manual_dir=DIR (the synset tars stay packed)."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="ImageNet-21k: all synsets of the full ImageNet release, one label each.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(),  # Names (synset ids) are set from the data.
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://image-net.org",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    tars = find_synset_tars(os.fspath(dl_manager.manual_dir))
    synsets = [os.path.basename(t)[:-len(".tar")] for t in tars]
    self.info.features["label"].names = synsets
    logging.info("ImageNet-21k: %d synsets in %s", len(synsets), dl_manager.manual_dir)
    return {"train": self._generate_examples(tars)}

  def _generate_examples(self, tars: List[str]) -> Iterator[Tuple[str, dict]]:
    skipped, broken, duplicates, converted = [], [], [], 0
    for label, tar_path in enumerate(tars):
      tar_name = os.path.basename(tar_path)
      try:
        for name, data in tar_files(tar_path, duplicates):
          image, note = normalize_image(data)
          where = f"{tar_name}/{name}"
          if image is None:
            skipped.append(f"{where}: {note}")
            logging.warning("Skipped unreadable image %s (%s); %d skipped so far.", where, note,
                            len(skipped))
            continue
          converted += bool(note)
          yield where, {"image": image, "label": label, "file_name": where}
      except BrokenTarError as e:
        if self.strict:
          raise BrokenTarError(f"{e}: restore it from the release, or build without --strict "
                               "to keep its readable files and go on") from e
        broken.append(str(e))
        logging.warning("Synset tar %s; its readable files are kept, the build goes on (restore "
                        "the tar and rebuild to get the rest).", e)
    self.info.metadata["skipped"] = skipped
    self.info.metadata["broken_tars"] = broken
    self.info.metadata["duplicates"] = duplicates
    self.info.metadata["reencoded"] = converted
    logging.info("ImageNet-21k: skipped %d unreadable images, %d duplicate names, read %d broken "
                 "tars in part; re-encoded %d.", len(skipped), len(duplicates), len(broken),
                 converted)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Builds the imagenet21k TFDS dataset.")
  parser.add_argument("--manual_dir", required=True, type=paths.expand,
                      help="directory holding n########.tar files")
  parser.add_argument("--data_dir", required=True, type=paths.expand, help="TFDS data_dir to write to")
  parser.add_argument("--config", default="fall11", choices=["fall11", "winter21"])
  parser.add_argument("--strict", action="store_true",
                      help="stop at a synset tar that cannot be read to its end (default: keep its "
                           "readable files, list it in the metadata and go on)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  builder = Imagenet21k(config=args.config, data_dir=args.data_dir)
  builder.strict = args.strict
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  except BrokenTarError as e:  # Only with --strict.
    raise SystemExit(f"error: {e}") from None
  train, metadata = builder.info.splits["train"], builder.info.metadata
  print(f"imagenet21k/{args.config}: {builder.info.features['label'].num_classes} classes, "
        f"{train.num_examples} images in {len(train.filepaths)} shards under {builder.data_dir}; "
        f"skipped {len(metadata['skipped'])} unreadable images and {len(metadata['duplicates'])} "
        f"duplicate names; {len(metadata['broken_tars'])} synset tars read only in part"
        + "".join(f"\n  {line}" for line in metadata["broken_tars"]))


if __name__ == "__main__":
  main()
