"""SavedModel and ONNX exports of every model family against the JAX model: max |logits difference|.

The tests check one family; this one-off run checks all the tiny variants (random weights far from
their init, the default digits config at the variant's resolution). SavedModel: uint8 batches of
two sizes and non-square images through the serving signature, against the JAX model on the eval
pipeline's resize and value range. ONNX: preprocessed float32 batches in onnxruntime.

  python experiments/export_parity.py     # prints a Markdown table (experiments/README.md)
"""
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import onnxruntime  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from vit_jax import configuration  # pylint: disable=g-import-not-at-top
from vit_jax.convert.core import expected_leaves  # pylint: disable=g-import-not-at-top
from vit_jax.data import pp  # pylint: disable=g-import-not-at-top
from vit_jax.export import onnx_model, saved_model  # pylint: disable=g-import-not-at-top
from vit_jax.export.trained import Trained  # pylint: disable=g-import-not-at-top
from vit_jax.models import create_model  # pylint: disable=g-import-not-at-top

# (label, model name, model fields); each at its variant's own image size.
MODELS = [
    ("ViT (token)", "ViT-micro/4", {}),
    ("ViT (gap)", "ViT-micro/4", {"classifier": "gap"}),
    ("R+ViT hybrid", "R+ViT-testing", {}),
    ("BiT", "BiT-testing", {}),
    ("TNT", "TNT-test", {}),
    ("T2T-ViT", "T2T-ViT-test", {}),
    ("LV-ViT", "LV-ViT-test", {}),
]
NUM_CLASSES = 10


def random_variables(model, seed=0):
  """All variables with values far from init: kernels normal/sqrt(fan-in), scales 1 + 0.2 n, biases
  and means 0.1 n, variances 1 + 0.2 |n|, tables 0.5 n."""
  rng = np.random.default_rng(seed)
  out = {}
  for path, spec in expected_leaves(model).items():
    noise = rng.normal(size=spec.shape)
    if path.endswith("/kernel"):
      value = noise / np.sqrt(np.prod(spec.shape[:-1]))
    elif path.endswith("/scale"):
      value = 1.0 + 0.2 * noise
    elif path.endswith(("/bias", "/mean")):
      value = 0.1 * noise
    elif path.endswith("/var"):
      value = 1.0 + 0.2 * np.abs(noise)
    else:
      value = 0.5 * noise
    node = out
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value.astype(np.float32)
  return out


def trained_for(name, fields):
  size = create_model(name).image_size
  config = configuration.base_config(name)
  configuration.small_digits_job(config, size)
  for key, value in fields.items():
    config.model[key] = value
  model = create_model(name, num_classes=NUM_CLASSES, image_size=size, **fields)
  return Trained("random", random_variables(model), None, config)


def main():
  rng = np.random.default_rng(0)
  rows = []
  for label, name, fields in MODELS:
    trained = trained_for(name, fields)
    size = trained.image_size
    apply = jax.jit(lambda x, t=trained: t.model.apply(t.variables, x, train=False))
    preprocess = pp.build(trained.eval_pipeline)
    with tempfile.TemporaryDirectory() as tmp:
      start = time.perf_counter()
      saved_model.save_saved_model(trained, f"{tmp}/sm")
      sm_seconds = time.perf_counter() - start
      serve = tf.saved_model.load(f"{tmp}/sm").signatures[saved_model.SIGNATURE]
      sm_diff, scale = 0.0, 0.0
      for shape in ((2, size + 13, size - 5, 3), (5, size, size, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        got = serve(images=tf.constant(images))["logits"].numpy()
        pixels = np.stack([preprocess({"image": tf.constant(x)})["image"].numpy() for x in images])
        want = np.asarray(apply(pixels))
        sm_diff, scale = max(sm_diff, np.abs(got - want).max()), max(scale, np.abs(want).max())
      start = time.perf_counter()
      onnx_model.save_onnx(trained, f"{tmp}/m.onnx")
      onnx_seconds = time.perf_counter() - start
      session = onnxruntime.InferenceSession(f"{tmp}/m.onnx", providers=["CPUExecutionProvider"])
      images = rng.uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
      onnx_diff = np.abs(session.run(None, {"images": images})[0] - np.asarray(apply(images))).max()
    rows.append((label, name, size, scale, sm_diff, onnx_diff, sm_seconds, onnx_seconds))
    print(f"{label}: done", flush=True)
  print("| family | model | px | max abs logit | SavedModel max diff | ONNX max diff "
        "| SavedModel export s | ONNX export s |")
  print("|---|---|---|---|---|---|---|---|")
  for label, name, size, scale, sm_diff, onnx_diff, sm_s, onnx_s in rows:
    print(f"| {label} | {name} | {size} | {scale:.3g} | {sm_diff:.2g} | {onnx_diff:.2g} | "
          f"{sm_s:.1f} | {onnx_s:.1f} |")


if __name__ == "__main__":
  main()
