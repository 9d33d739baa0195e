"""`python -m vit_jax.predict --checkpoint=T IMAGE...`: a trained model's top-5 classes for image
files, named by the class names saved with its run.

T is a training workdir (or its checkpoints/ or a step directory in it): the model is rebuilt from
the run's config.json and the classes are named by its class_names.json. For a public .npz give
--config (the config it was trained with) and, if you have them, --class_names=FILE (JSON list or
one name per line); without names the class ids are shown. Each image goes through the run's eval
preprocessing (data.pp_eval; by default decode, resize to data.image_size, value range) with the
input pipeline's own ops; formats TensorFlow does not decode (WebP, TIFF, ...) are read with Pillow
first. Scores are the class probabilities the model was trained to give: softmax, or sigmoid for a
model trained with sigmoid cross-entropy (multi-label data).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import functools  # noqa: E402
from typing import Sequence  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from vit_jax import config_cli, paths  # noqa: E402

SCORES = ("auto", "softmax", "sigmoid")

# The flags exist only when this module runs as the command: importing it (tests, other commands,
# which define flags of the same names) defines none.
if __name__ == "__main__":
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "The model's config; default: the config.json of the checkpoint's run.",
      lock_config=True)
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir, Orbax step directory or "
                                    ".npz (with --config).")
  _CLASS_NAMES = flags.DEFINE_string("class_names", "", "Class names (JSON list or one per line); "
                                     "default: the class_names.json of the checkpoint's run.")
  _TOP_K = flags.DEFINE_integer("top_k", 5, "Classes shown per image.")
  _SCORES = flags.DEFINE_enum("scores", "auto", SCORES, "softmax or sigmoid probabilities; auto: "
                              "as the model was trained (the run's loss and data).")
  flags.mark_flags_as_required(["checkpoint"])


def run_config(checkpoint: str):
  """The config of the run the checkpoint belongs to (its config.json)."""
  from vit_jax import run_files  # pylint: disable=import-outside-toplevel
  workdir = run_files.find_workdir(checkpoint)
  if workdir is None:
    raise ValueError(f"{checkpoint} is not inside a training workdir with a {run_files.CONFIG_FILE}: "
                     "pass --config=FILE, the config the model was trained with")
  return run_files.read_config(workdir)


def score_kind(config, scores: str = "auto") -> str:
  """'softmax' or 'sigmoid': as asked, else as the model was trained (sigmoid cross-entropy, chosen
  by name or by config.loss='auto' on multi-label data, which only the data can tell)."""
  if scores != "auto":
    return scores
  if config.loss != "auto":
    return "sigmoid" if config.loss == "sigmoid_xent" else "softmax"
  from vit_jax.data import sources  # pylint: disable=import-outside-toplevel
  try:
    return "sigmoid" if sources.get_source(config.data).multi_label else "softmax"
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"the model was trained with loss 'auto', which is sigmoid for multi-label data, "
                     f"and its data is not here to tell ({e}); pass --scores=softmax or "
                     "--scores=sigmoid") from None


def read_images(files: Sequence[str], config, num_classes: int):
  """(N, S, S, 3) float32: each file through the config's eval preprocessing; a file neither
  TensorFlow nor Pillow can read is an error naming it."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  from vit_jax.data import pipeline, pp  # pylint: disable=import-outside-toplevel
  spec = config.data.pp_eval or pipeline.default_pp_eval(config.data.image_size)
  preprocess = pp.build(spec, num_classes=num_classes)
  seed = tf.constant([0, 0], tf.int64)  # for an eval pipeline with random ops: fixed

  def run(image):  # labels the pipeline may turn into targets; unused
    example = {"image": image, "label": tf.constant(0, tf.int32), "labels": tf.constant([0], tf.int32)}
    return preprocess(example, seed)["image"].numpy().astype(np.float32)

  images = []
  for path in files:
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
      images.append(run(tf.constant(data)))
    except tf.errors.InvalidArgumentError:  # a format TensorFlow does not decode
      try:
        with Image.open(path) as image:
          pixels = np.asarray(image.convert("RGB"))
      except (UnidentifiedImageError, OSError):
        raise ValueError(f"{path} is not an image that TensorFlow or Pillow can read") from None
      images.append(run(tf.constant(pixels)))
  return np.stack(images)


def predict(checkpoint: str, files: Sequence[str], config=None, *, class_names: str = "",
            top_k: int = 5, scores: str = "auto", batch_size: int = 64
            ) -> tuple[list[tuple[str, list[tuple[int, str, float]]]], str, str]:
  """([(file, [(class id, name, score), ... top_k]) ...], where the names come from, the scores'
  kind: softmax or sigmoid)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax import run_files, teacher  # pylint: disable=import-outside-toplevel
  from vit_jax.checkpoint import restore_model_state, restore_params  # pylint: disable=import-outside-toplevel
  from vit_jax.train.build import build_model  # pylint: disable=import-outside-toplevel
  if not files:
    raise ValueError("no image files given: python -m vit_jax.predict --checkpoint=T IMAGE...")
  if top_k < 1:
    raise ValueError(f"--top_k={top_k} must be at least 1")
  config = config if config is not None else run_config(checkpoint)
  params = restore_params(checkpoint)
  head = params.get("head", {}).get("kernel")
  if head is None:
    raise ValueError(f"{checkpoint} has no classification head (params/head/kernel) to predict with")
  num_classes = int(np.shape(head)[-1])
  model = build_model(config, num_classes)
  teacher.check_fits(model, params, config.data.image_size, checkpoint, config.model_name,
                     role="checkpoint")
  variables = {"params": params, **restore_model_state(checkpoint)}
  names, names_from = run_files.class_names_of(checkpoint, num_classes, class_names)
  kind = score_kind(config, scores)
  images = read_images(files, config, num_classes)
  batch = min(len(images), batch_size)
  padded = np.concatenate([images, np.zeros((-len(images) % batch,) + images.shape[1:], np.float32)])
  probabilities = np.concatenate([
      np.asarray(jax.device_get(_scores(model, kind, variables, padded[i:i + batch])))
      for i in range(0, len(padded), batch)])[:len(images)]
  results = []
  for path, row in zip(files, probabilities):
    top = np.argsort(-row, kind="stable")[:top_k]
    results.append((path, [(int(k), names[k], float(row[k])) for k in top]))
  return results, names_from, kind


def _scores(model, kind: str, variables, images):
  from vit_jax import teacher  # pylint: disable=import-outside-toplevel
  if kind == "softmax":
    return teacher.class_probabilities(model, variables, images)
  return _sigmoid_probabilities()(model, variables, images)


@functools.lru_cache(maxsize=None)
def _sigmoid_probabilities():
  """sigmoid of the model's logits without noise; compiled once per model and batch shape."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  @functools.partial(jax.jit, static_argnums=0)
  def sigmoid(model, variables, images):
    return jax.nn.sigmoid(model.apply(variables, images, train=False).astype(jnp.float32))
  return sigmoid


def format_results(results, names_from: str, kind: str = "") -> list[str]:
  """Each file, then its classes ranked with their scores; then where the names come from."""
  lines = []
  for path, top in results:
    lines.append(path)
    width = max(len(name) for _, name, _ in top)
    lines += [f"  {rank}. {name:<{width}}  {score:.4f}" for rank, (_, name, score) in enumerate(top, 1)]
  lines.append(f"(class names: {names_from}{'; ' + kind + ' scores' if kind else ''})")
  return lines


def main(argv):
  files = [paths.expand(f) for f in argv[1:]]
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from vit_jax.data.sources import hide_gpus_from_tensorflow  # pylint: disable=import-outside-toplevel
  hide_gpus_from_tensorflow()
  checkpoint = paths.expand(_CHECKPOINT.value)
  try:
    config = _CONFIG.value if _CONFIG.value is not None else run_config(checkpoint)
    results, names_from, kind = predict(checkpoint, files, config,
                                        class_names=paths.expand(_CLASS_NAMES.value),
                                        top_k=_TOP_K.value, scores=_SCORES.value)
  except (ValueError, FileNotFoundError) as e:  # no config, another model, an unreadable image
    raise SystemExit(f"error: {e}") from None
  print("\n".join(format_results(results, names_from, kind)))


if __name__ == "__main__":
  config_cli.exit_on_config_error()
  app.run(main)
