"""Noisy Student's teacher step: `python -m vit_jax.pseudo_labels --teacher=T --config=C --output=DIR`.

Runs a trained model (T: a training workdir, an Orbax step directory or a public .npz; its
architecture is C's model) without noise (C's eval preprocessing at data.image_size, no dropout, no
stochastic depth) over C's data.unlabeled_split, stores its class probabilities per shard, then keeps
the examples Noisy Student trains on (data/pseudo_label_selection.py: --threshold on the highest
probability, --per_class K rows per predicted class, duplicating short classes) with --labels=soft
(the teacher's distribution) or hard (its top class). DIR (data/pseudo_label_store.py) then feeds a
student through config.data.pseudo_labels=DIR.

On many hosts every host runs the same command (with the multi-host flags of `vit_jax.main`, or the
JAX_* variables) and writes shards process_index, process_index + process_count, ... to DIR, which all
hosts must see; process 0 selects once every shard is written. A rerun skips the shards
already written, so an interrupted run ends with the same labels.
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
      "config", None, "Config whose model is the teacher's and whose data.unlabeled_split is labelled.",
      lock_config=True)
  _TEACHER = flags.DEFINE_string("teacher", None, "Training workdir, Orbax step directory or .npz.")
  _OUTPUT = flags.DEFINE_string("output", None, "Directory of the pseudo-labels (resumed if present).")
  _LABELS = flags.DEFINE_enum("labels", "soft", ["soft", "hard"],
                              "soft: the teacher's class distribution; hard: its top class (one-hot).")
  _THRESHOLD = flags.DEFINE_float("threshold", 0.3, "Examples whose highest probability is below it "
                                  "are dropped (Noisy Student: 0.3 on ImageNet).")
  _PER_CLASS = flags.DEFINE_integer("per_class", 0, "K > 0: K rows per predicted class, the most "
                                    "confident K or every one duplicated up to K; 0: no balancing.")
  _SHARDS = flags.DEFINE_integer("shards", 16, "Files the probabilities are written in (rounded up to "
                                 "a multiple of the process count).")
  flags.mark_flags_as_required(["config", "teacher", "output"])


def label(config, teacher: str, output: str, *, mode: str = "soft", threshold: float = 0.3,
          per_class: int = 0, shards: int = 16, process_index: int = 0,
          process_count: int = 1) -> dict:
  """Writes this process's missing shards and, on process 0 once all are written, the selection.

  Returns {'written', 'resumed', 'skipped', 'counts'}: shards written now, shards found written,
  undecodable examples, and the selection's counts (pseudo_label_store.Counts; None on the other
  processes).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from vit_jax import teacher as teacher_lib  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from vit_jax.data import (pipeline, pseudo_label_selection, pseudo_label_store, sources,
                            split_slices)
  from vit_jax.data.source import source_name  # pylint: disable=import-outside-toplevel

  data = config.data
  split, size = data.unlabeled_split, data.image_size
  if not split:
    raise ValueError("config.data.unlabeled_split is empty: set it to the split to pseudo-label, "
                     "e.g. --config.data.unlabeled_split='train[10%:]'")
  source = sources.get_source(data)
  shared = split_slices.positions(source, split).overlap(
      split_slices.positions(source, data.train_split))
  if shared:
    raise ValueError(f"config.data.unlabeled_split={split!r} shares {shared} examples with "
                     f"config.data.train_split={data.train_split!r}, the labelled examples: "
                     "pseudo-label a disjoint split")
  model, variables = teacher_lib.load(config, source.num_classes, teacher)
  shards = -(-shards // process_count) * process_count
  manifest = pseudo_label_store.start(output, pseudo_label_store.Manifest(
      source=source_name(data), split=split, num_classes=source.num_classes,
      examples=source.num_examples(split), shards=shards, teacher=str(teacher), mode=mode,
      threshold=float(threshold), per_class=int(per_class)))
  done = {"written": 0, "resumed": 0, "skipped": 0, "counts": manifest.counts}
  if manifest.counts is not None:  # Finished by an earlier run.
    done["resumed"] = len(range(process_index, shards, process_count))
    return done
  local_batch = config.eval_batch_size
  for shard in range(process_index, shards, process_count):
    if pseudo_label_store.is_written(output, shard, shards):
      done["resumed"] += 1
      continue
    batches = pipeline.eval_batches(data, source=source, split=split,
                                    batch_size=local_batch * shards, image_size=size,
                                    process_index=shard, process_count=shards, keys=True)
    keys, probabilities = [], []
    for batch in batches:
      real = batch["mask"] > 0
      scores = jax.device_get(teacher_lib.class_probabilities(model, variables, batch["image"]))
      keys += [key.decode() for key in batch[pipeline.EXAMPLE_KEY][real]]
      probabilities.append(scores[real])
    done["skipped"] += batches.skipped
    pseudo_label_store.write_shard(output, manifest, shard, keys, np.concatenate(probabilities))
    done["written"] += 1
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("vit_jax.pseudo_labels: every shard written")
  if process_index == 0:
    keys, probabilities = pseudo_label_store.read_shards(output, manifest)
    chosen = pseudo_label_selection.select(probabilities, threshold, per_class)
    finished = pseudo_label_store.write_labels(
        output, manifest, keys[chosen.rows],
        pseudo_label_selection.labels_of(probabilities[chosen.rows], mode), chosen.copies,
        chosen.counts)
    done["counts"] = finished.counts
  return done


def summary(output: str, counts) -> str:
  """One paragraph on what the selection kept."""
  empty = (f"; no confident example of classes {list(counts.empty_classes)}"
           if counts.empty_classes else "")
  return (f"pseudo-labels in {output}: {counts.examples} examples labelled, {counts.confident} "
          f"confident, {counts.kept} kept as {counts.rows} rows per epoch (per class: "
          f"{', '.join(str(n) for n in counts.per_class)}){empty}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if not flags.FLAGS["verbosity"].present:  # the console shows the result; -v 0 for more
    logging.set_verbosity(logging.WARNING)
  multihost_flags.connect()
  import jax  # pylint: disable=import-outside-toplevel
  from vit_jax import multihost  # pylint: disable=import-outside-toplevel
  from vit_jax.data.sources import hide_gpus_from_tensorflow  # pylint: disable=import-outside-toplevel
  hide_gpus_from_tensorflow()
  output = paths.expand(_OUTPUT.value)
  try:
    with multihost.stop_together():
      done = label(config, paths.expand(_TEACHER.value), output, mode=_LABELS.value,
                   threshold=_THRESHOLD.value, per_class=_PER_CLASS.value, shards=_SHARDS.value,
                   process_index=jax.process_index(), process_count=jax.process_count())
  except ValueError as e:  # labels made for other data, a teacher of another model: one line
    raise SystemExit(f"error: {e}") from None
  print(f"process {jax.process_index()} of {jax.process_count()}: {done['written']} shards "
        f"written, {done['resumed']} already there, {done['skipped']} undecodable examples skipped")
  if done["counts"] is not None:
    print(summary(output, done["counts"]))


if __name__ == "__main__":
  config_cli.exit_on_config_error()
  app.run(main)
