"""`python -m vit_jax.analysis --config=C --checkpoint=T --output=DIR`: Figure 7 of the ViT paper for a
trained ViT (T: a training workdir, an Orbax step directory or a public .npz of C's model), over real
images of C's data (the eval preprocessing of data.test_split, or --split)."""
from typing import Optional

from absl import app, flags, logging

from vit_jax import paths


def define_flags() -> None:
  """The command's flags, defined only when it runs (other commands define --config and --output)."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file("config", None, "Config whose model the checkpoint holds and whose "
                                  "data the images come from.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "Training workdir, Orbax step directory or .npz.")
  flags.DEFINE_string("output", None, "Directory for the PNG figures, analysis.npz and analysis.json.")
  flags.DEFINE_integer("images", 128, "Images the mean attention distance averages over (the paper: 128).")
  flags.DEFINE_integer("samples", 8, "Images shown with their attention rollout maps.")
  flags.DEFINE_string("split", "", "Split the images come from; empty: config.data.test_split.")
  flags.mark_flags_as_required(["config", "checkpoint", "output"])


def read_images(config, count: int, split: Optional[str] = None):
  """(images (n, S, S, 3) in the model's input range, labels (n,)): the first n = min(count, split
  size) readable examples of `split` through the eval preprocessing at data.image_size."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  if count < 1:
    raise ValueError(f"--images must be at least 1, got {count}")
  images, labels = [], []
  batches = pipeline.eval_batches(config.data, split=split or None, batch_size=min(count, 256),
                                  image_size=config.data.image_size)
  for batch in batches:
    real = batch["mask"] > 0
    images.append(batch["image"][real])
    label = np.asarray(batch["label"])[real]
    labels.append(label.argmax(axis=-1) if label.ndim > 1 else label)
    if sum(len(i) for i in images) >= count:
      break
  return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def run(config, checkpoint: str, output: str, *, images: int = 128, samples: int = 8,
        split: Optional[str] = None) -> tuple[list[str], dict]:
  """Loads the checkpoint as the config's model (checked), analyses it on `images` real images and
  writes the figures and numbers into `output`; returns (the files written, the summary)."""
  from vit_jax import teacher  # pylint: disable=import-outside-toplevel
  from vit_jax.analysis import readout, report  # pylint: disable=import-outside-toplevel
  from vit_jax.data import sources  # pylint: disable=import-outside-toplevel
  from vit_jax.train.build import build_model  # pylint: disable=import-outside-toplevel
  if samples < 1:
    raise ValueError(f"--samples must be at least 1, got {samples}")
  num_classes = sources.get_source(config.data).num_classes
  readout.check_covered(build_model(config, num_classes), config.model_name)  # before any restore
  model, variables = teacher.load(config, num_classes, checkpoint, role="checkpoint")
  pixels, labels = read_images(config, images, split)
  arrays = report.analyse(model, variables["params"], pixels, samples=min(samples, len(pixels)))
  summary = report.summarise(arrays, model, model=config.model_name, checkpoint=checkpoint,
                             split=split or config.data.test_split)
  return report.write(output, arrays, summary, labels[:samples]), summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if not values["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from vit_jax.data.sources import hide_gpus_from_tensorflow  # pylint: disable=import-outside-toplevel
  hide_gpus_from_tensorflow()
  output = paths.expand(values.output)
  try:
    written, summary = run(values.config, paths.expand(values.checkpoint), output,
                           images=values.images, samples=values.samples, split=values.split)
  except ValueError as e:  # another family, a checkpoint of another model, a bad count: one line
    raise SystemExit(f"error: {e}") from None
  distance = summary["attention_distance_pixels"]["mean_per_layer"]
  print(f"{len(written)} files in {output} ({summary['images']} images): mean attention distance per "
        f"layer {distance} px; the most similar other position embedding is a neighbour for "
        f"{summary['position_similarity']['most_similar_other_is_a_neighbour']:.0%} of positions")
