"""python -m vit_jax.export --workdir=DIR --format=npz|safetensors|saved_model|onnx --output=PATH

Exports a run's newest checkpoint (or --checkpoint, a step directory or .npz) in one format and
writes its model card beside it (PATH.model_card.md and PATH.model_card.json).
"""
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as the other commands: TF's start-up notices off
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from vit_jax import paths  # noqa: E402
from vit_jax.export.formats import FORMATS, export  # noqa: E402


def define_flags() -> None:
  """The CLI flags; defined on demand so that importing this module never clashes with other CLIs."""
  flags.DEFINE_string("workdir", None, "Training workdir; exports its newest restorable checkpoint.")
  flags.DEFINE_string(
      "checkpoint", None, "A specific Orbax step directory (or checkpoint dir, or .npz) to export.")
  flags.DEFINE_enum("format", "npz", list(FORMATS), "What to write.")
  flags.DEFINE_string("output", None, "The file (npz, safetensors, onnx) or directory (saved_model).")


def main(argv: Sequence[str]) -> None:
  """Exports --workdir or --checkpoint to --output and prints what it wrote."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir, checkpoint, output = (paths.expand(flags.FLAGS[name].value)
                                 for name in ("workdir", "checkpoint", "output"))
  if bool(workdir) == bool(checkpoint):
    raise app.UsageError("pass exactly one of --workdir or --checkpoint")
  if not output:
    raise app.UsageError("--output is required (a file, or a directory for --format=saved_model)")
  source = workdir or checkpoint
  if not flags.FLAGS["verbosity"].present:  # the console shows what was written; -v 0 for more
    logging.set_verbosity(logging.WARNING)
  try:
    trained, md_path, json_path = export(source, flags.FLAGS.format, output)
  except (ValueError, FileNotFoundError) as e:  # a checkpoint this format cannot take: one line
    sys.exit(f"vit_jax.export: {e}")
  print(f"Wrote {output} ({flags.FLAGS.format}): {trained.num_arrays} arrays, {trained.num_params:,} "
        f"parameters (from {source}); model card {md_path}, {json_path}.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
