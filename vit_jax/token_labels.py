"""Annotator for token labeling: `python -m vit_jax.token_labels --teacher=T --config=C --output=DIR`.

Runs a trained model of ours (T: a training workdir, an Orbax step directory or a public .npz; its
architecture is C's model) over C's train split without augmentation (C's eval preprocessing at
data.image_size) and stores each example's top-k class scores on a grid (models/dense_scores.py) in
DIR, one file per shard of the split (data/score_maps.py). On many hosts every host runs the same
command (with the multi-host flags of `vit_jax.main`, or the JAX_* variables) and writes the shards
s = process_index, process_index + process_count, ...; a rerun skips the shards already written, so an
interrupted run continues to the same maps.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import config_cli, multihost_flags, paths  # noqa: E402

# The flags exist only when this module runs as the command: importing it (tests, other
# commands, which define flags of the same names) defines none.
if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config whose model is the teacher's and whose data (train split) is annotated.",
      lock_config=True)
  _TEACHER = flags.DEFINE_string("teacher", None, "Training workdir, Orbax step directory or .npz.")
  _OUTPUT = flags.DEFINE_string("output", None, "Directory of the score maps (resumed if present).")
  _TOP_K = flags.DEFINE_integer("top_k", 5, "Classes kept per grid cell (official: 5).")
  _GRID = flags.DEFINE_string("grid", "", "HxW of the stored maps, e.g. 14x14; empty: the teacher's own "
                              "grid (its token grid or feature map).")
  _SHARDS = flags.DEFINE_integer("shards", 16, "Files the split's maps are written in (rounded up to a "
                                 "multiple of the process count).")
  flags.mark_flags_as_required(["config", "teacher", "output"])


def annotate(config, teacher: str, output: str, *, top_k: int = 5, grid=None, shards: int = 16,
             process_index: int = 0, process_count: int = 1) -> dict:
  """Writes this process's missing shards of the maps; returns {'written', 'resumed', 'skipped'}:
  shards written now, shards found written, examples that could not be decoded."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from vit_jax import teacher as teachers  # pylint: disable=import-outside-toplevel
  from vit_jax.data import pipeline, score_maps, sources  # pylint: disable=import-outside-toplevel
  from vit_jax.data.source import source_name  # pylint: disable=import-outside-toplevel
  from vit_jax.models.dense_scores import dense_logits, top_k_maps  # pylint: disable=import-outside-toplevel

  source = sources.get_source(config.data)
  split, size = config.data.train_split, config.data.image_size
  model, variables = teachers.load(config, source.num_classes, teacher)
  if model.interface.pooling != "gap":
    logging.warning(
        "the teacher %s classifies by %s pooling, so its head was trained on the pooled token only: "
        "its scores of single patch tokens are weaker token labels than a GAP model's, whose head "
        "averages them (docs/architectures.md#token-labeling-pipeline)", teacher,
        model.interface.pooling)
  score = jax.jit(lambda v, x: top_k_maps(dense_logits(model, v, x), top_k, grid))
  probe, _ = jax.eval_shape(score, variables, jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
  shards = -(-shards // process_count) * process_count
  manifest = score_maps.Manifest(
      source=source_name(config.data), split=split, num_classes=source.num_classes, top_k=top_k,
      grid=tuple(probe.shape[2:]), examples=source.num_examples(split), shards=shards,
      teacher=str(teacher))
  score_maps.start(output, manifest)
  local_batch = config.eval_batch_size
  done = {"written": 0, "resumed": 0, "skipped": 0}
  for shard in range(process_index, shards, process_count):
    if score_maps.is_written(output, shard, shards):
      done["resumed"] += 1
      continue
    batches = pipeline.eval_batches(config.data, source=source, split=split,
                                    batch_size=local_batch * shards, image_size=size,
                                    process_index=shard, process_count=shards, keys=True)
    keys, values, indices = [], [], []
    for batch in batches:
      real = batch["mask"] > 0
      top_values, top_indices = jax.device_get(score(variables, batch["image"]))
      keys += [key.decode() for key in batch[pipeline.EXAMPLE_KEY][real]]
      values.append(top_values[real])
      indices.append(top_indices[real])
    done["skipped"] += batches.skipped
    score_maps.write_shard(output, manifest, shard, keys, np.concatenate(values),
                           np.concatenate(indices))
    done["written"] += 1
  return done


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  grid = tuple(int(n) for n in _GRID.value.lower().split("x")) if _GRID.value else None
  if grid is not None and len(grid) != 2:
    raise app.UsageError(f"--grid={_GRID.value!r}: give HxW, e.g. 14x14")
  if not flags.FLAGS["verbosity"].present:  # the console shows the result; -v 0 for more
    logging.set_verbosity(logging.WARNING)
  multihost_flags.connect()
  import jax  # pylint: disable=import-outside-toplevel
  from vit_jax import multihost  # pylint: disable=import-outside-toplevel
  from vit_jax.data.sources import hide_gpus_from_tensorflow  # pylint: disable=import-outside-toplevel
  hide_gpus_from_tensorflow()
  try:
    with multihost.stop_together():
      done = annotate(config, paths.expand(_TEACHER.value), paths.expand(_OUTPUT.value),
                      top_k=_TOP_K.value, grid=grid, shards=_SHARDS.value,
                      process_index=jax.process_index(), process_count=jax.process_count())
  except ValueError as e:  # maps made for other data, a teacher of another model: one line
    raise SystemExit(f"error: {e}") from None
  print(f"score maps in {paths.expand(_OUTPUT.value)}: {done['written']} shards written "
        f"by process {jax.process_index()} of {jax.process_count()}, {done['resumed']} already "
        f"there, {done['skipped']} undecodable examples skipped")


if __name__ == "__main__":
  config_cli.exit_on_config_error()
  app.run(main)
