"""The ONNX export (jax2onnx), for the serving stacks that take ONNX: float32 [batch, S, S, 3] images,
preprocessed as the model card says (the run's eval pipeline), in; logits out; any batch size.

Why jax2onnx and not tf2onnx on the SavedModel: jax2tf writes the model as one XlaCallModule op
(StableHLO), which tf2onnx cannot convert, and jax2tf's op-by-op TF graphs are gone from jax.
docs/export.md has the details and the version pin.
"""
import contextlib
import io
import logging
from typing import Any

import jax2onnx
import onnx

from vit_jax.export import files
from vit_jax.export.trained import Trained

INPUT = "images"
OUTPUT = "logits"
_PROTOBUF_LIMIT = 2 ** 31  # one ONNX file is one protobuf message


def onnx_model(trained: Trained) -> onnx.ModelProto:
  """The model as an ONNX graph with the variables as initializers, batch dimension 'batch'."""
  model, variables, size = trained.model, trained.variables, trained.image_size
  if 4 * trained.num_params >= _PROTOBUF_LIMIT:
    raise ValueError(f"{trained.model_name} has {trained.num_params:,} parameters: over the 2 GiB an "
                     "ONNX file can hold without external data, which this export does not write")

  def logits(images):
    return model.apply(variables, images, train=False)

  # jax2onnx 0.13.0 logs a traceback for each plugin of a library it cannot import (dm_pix's on this
  # jax) and onnx_ir warns about every constant shape it does not type: neither concerns our models.
  loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
  levels = [log.level for log in loggers]
  for log in loggers:
    log.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):  # and it prints debug lines on stdout
      return jax2onnx.to_onnx(logits, [("batch", size, size, 3)], model_name=trained.model_name,
                              input_names=[INPUT], output_names=[OUTPUT])
  finally:
    for log, level in zip(loggers, levels):
      log.setLevel(level)


def save_onnx(trained: Trained, path: Any) -> onnx.ModelProto:
  proto = onnx_model(trained)
  files.write_bytes(path, proto.SerializeToString())
  return proto


def interface(trained: Trained) -> dict[str, str]:
  """What the export takes and returns, for the model card."""
  size = trained.image_size
  return {"input": f"{INPUT}: float32 [batch, {size}, {size}, 3] RGB (NHWC), preprocessed",
          "output": f"{OUTPUT}: float32 [batch, {trained.overrides['num_classes']}]",
          "preprocessing": f"before the graph, as the run's eval pipeline: {trained.eval_pipeline}"}
