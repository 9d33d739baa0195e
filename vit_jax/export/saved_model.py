"""The TensorFlow SavedModel export (jax2tf): a serving signature that takes uint8 images of any size,
in batches of any size, runs the run's own eval preprocessing (its resize and value range, the same
tf ops the eval pipeline runs) and returns the logits.

The model itself is jax2tf's native serialization (one XlaCallModule op holding StableHLO, the
variables as tf.Variables), polymorphic in the batch dimension. TensorFlow Serving, tf.saved_model.load
and TF.js/TFLite converters that accept XlaCallModule read it.
"""
import os
import shutil
from typing import Any, Callable

from jax.experimental import jax2tf
import numpy as np
import tensorflow as tf

from vit_jax.checkpoint import npz
from vit_jax.data import pp
from vit_jax.export.trained import Trained

SIGNATURE = "serving_default"
INPUT = "images"
OUTPUT = "logits"
_LABEL_OPS = ("onehot", "multi_hot")  # they read labels, which a served image does not have


def serving_preprocess(spec: str, image_size: int) -> Callable[[tf.Tensor], tf.Tensor]:
  """The eval pipeline `spec` as a function of one uint8 (H, W, 3) image -> float32 (S, S, 3).

  Label ops are dropped; random ops are refused, since a served model must answer the same way
  every time.
  """
  kept = "|".join(item for item in spec.split("|")
                  if item.strip() and pp.parse(item)[0][0] not in _LABEL_OPS)
  pipeline = pp.build(kept)
  if pipeline.num_random:
    raise ValueError(f"the eval pipeline {spec!r} has random ops; a served model must be "
                     "deterministic: set data.pp_eval to a pipeline without them")

  def preprocess(image: tf.Tensor) -> tf.Tensor:
    out = tf.cast(pipeline({"image": image})["image"], tf.float32)
    return tf.ensure_shape(out, [image_size, image_size, 3])
  return preprocess


def serving_module(trained: Trained) -> tf.Module:
  """A tf.Module holding the variables and the `serve` function (the serving signature)."""
  model, size = trained.model, trained.image_size
  logits_fn = jax2tf.convert(lambda variables, x: model.apply(variables, x, train=False),
                             polymorphic_shapes=[None, f"(b, {size}, {size}, 3)"], with_gradient=False)
  preprocess = serving_preprocess(trained.eval_pipeline, size)
  module = tf.Module()
  module.model_variables = tf.nest.map_structure(
      lambda leaf: tf.Variable(np.asarray(leaf), trainable=False), trained.variables)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT)],
               autograph=False)
  def serve(images):
    pixels = tf.map_fn(preprocess, images,
                       fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
    return {OUTPUT: logits_fn(module.model_variables, pixels)}

  module.serve = serve
  return module


def save_saved_model(trained: Trained, directory: Any) -> None:
  """Writes the SavedModel directory (local: built beside it, then moved into place)."""
  directory = os.fspath(directory).rstrip("/")
  module = serving_module(trained)
  if npz.is_remote(directory):
    tf.saved_model.save(module, directory, signatures={SIGNATURE: module.serve})
    return
  tmp = f"{directory}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.serve})
  if os.path.isdir(directory):
    shutil.rmtree(directory)
  os.replace(tmp, directory)


def interface(trained: Trained) -> dict[str, str]:
  """What the export takes and returns, for the model card."""
  return {"signature": SIGNATURE,
          "input": f"{INPUT}: uint8 [batch, height, width, 3] RGB, any size (resized inside)",
          "output": f"{OUTPUT}: float32 [batch, {trained.overrides['num_classes']}]",
          "preprocessing": f"inside the graph: {trained.eval_pipeline}"}
