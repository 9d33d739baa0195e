"""`python -m vit_jax.evaluate --config=C --checkpoint=T [--split=S]`: a trained model (T: a training
workdir, an Orbax step directory or a public .npz of C's model) on every example of a split of C's
data, through C's eval preprocessing, sharded over the devices as training shards its batches.

Writes metrics.json and the confusion-matrix PNG (report.py) into --output (default: <workdir>/eval/
<split>) and prints a summary. --real_labels adds ReaL accuracy; --fewshot=1,5,10,25 adds few-shot
linear evaluation of the model's pre-logit features. On many hosts every host runs the same command
(with the multi-host flags of vit_jax.main); process 0 writes the files.
"""
import os
from typing import Optional, Sequence

from absl import app, flags, logging

from vit_jax import paths
from vit_jax.metrics import fewshot as fewshot_lib  # numpy only: cheap before the flags are parsed


def define_flags() -> None:
  """The command's flags, defined only when it runs (other commands define --config and --output)."""
  import importlib  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  importlib.import_module("vit_jax.multihost_flags")  # defines the flags that join a multi-host job
  config_flags.DEFINE_config_file("config", None, "Config whose model the checkpoint holds and whose "
                                  "data is evaluated.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "Training workdir, Orbax step directory or .npz.")
  flags.DEFINE_string("split", "", "Split to evaluate (slices work: 'test[:1000]'); empty: "
                      "config.data.test_split.")
  flags.DEFINE_string("output", "", "Directory for metrics.json and confusion_matrix.png; empty: "
                      "<workdir>/eval/<split> of the checkpoint's run.")
  flags.DEFINE_string("real_labels", "", "A ReaL labels file (ImageNet ReaL's real.json format): adds "
                      "ReaL accuracy.")
  flags.DEFINE_enum("real_by", "position", ["position", "file_name"], "How an example finds its "
                    "entry in --real_labels: its position in the split, or the ILSVRC2012_val_<n> "
                    "file name in its key.")
  flags.DEFINE_list("fewshot", [], "Shots per class for few-shot linear evaluation, e.g. 1,5,10,25; "
                    "empty: none.")
  flags.DEFINE_integer("fewshot_seeds", fewshot_lib.DEFAULT_SEEDS, "Draws of the shots, averaged.")
  flags.DEFINE_string("fewshot_train_split", "", "Split the shots come from; empty: "
                      "config.data.train_split.")
  flags.DEFINE_float("fewshot_l2", fewshot_lib.DEFAULT_L2, "Ridge regression strength.")
  flags.mark_flags_as_required(["config", "checkpoint"])


def _step_of(checkpoint: str) -> Optional[str]:
  parent, name = os.path.split(os.path.normpath(checkpoint))
  from vit_jax.checkpoint import CHECKPOINT_SUBDIR  # pylint: disable=import-outside-toplevel
  return name if name.isdigit() and os.path.basename(parent) == CHECKPOINT_SUBDIR else None


def _placed(variables: dict, s) -> dict:
  """The checkpoint's variables on the devices, laid out as training lays out its state."""
  import jax  # pylint: disable=import-outside-toplevel
  placed = {"params": jax.device_put(variables["params"], s.state_shardings.params)}
  for name, tree in variables.items():
    if name != "params":
      placed[name] = jax.device_put(tree, s.state_shardings.model_state[name])
  return placed


def run(config, checkpoint: str, output: str = "", *, split: str = "", real_labels_file: str = "",
        real_by: str = "position", fewshot_shots: Sequence[int] = (),
        fewshot_seeds: int = fewshot_lib.DEFAULT_SEEDS, fewshot_train_split: str = "",
        fewshot_l2: float = fewshot_lib.DEFAULT_L2) -> tuple[list[str], dict, list[str]]:
  """Evaluates the checkpoint (loaded as the config's model, checked) on `split`; returns (the files
  written, the metrics, the summary lines). Process 0 writes; every process returns the metrics."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax import run_files, teacher  # pylint: disable=import-outside-toplevel
  from vit_jax.data import sources, split_slices  # pylint: disable=import-outside-toplevel
  from vit_jax.data.source import source_name  # pylint: disable=import-outside-toplevel
  from vit_jax.evaluate import report  # pylint: disable=import-outside-toplevel
  from vit_jax.metrics import real_labels  # pylint: disable=import-outside-toplevel
  from vit_jax.train import eval_pass, evaluators, loop  # pylint: disable=import-outside-toplevel

  source = sources.get_source(config.data)
  split = split or config.data.test_split
  workdir = run_files.find_workdir(checkpoint)
  output = output or report.default_output(workdir, split, _step_of(checkpoint))
  if not output:
    raise ValueError(f"{checkpoint} is not inside a training workdir: give --output=DIR for the "
                     "metrics")
  table = real_labels.load(real_labels_file, source.num_classes) if real_labels_file else None
  columns = evaluators.real_columns(real_by) if table else {}
  s = loop.setup(config, source)
  _, variables = teacher.load(config, source.num_classes, checkpoint, role="checkpoint")
  variables = _placed(variables, s)
  start = split_slices.positions(source, split).start

  def keep(outputs, local):
    rows = {"prediction": np.argmax(outputs["logits"], axis=-1), "label": local["label"]}
    if s.multi_label:
      rows["logits"] = outputs["logits"]
    if table:
      rows["entry"] = evaluators.real_entries(local, real_by, start)
    return rows

  batches = evaluators.split_batches(s, source, config.data, split, config.eval_batch_size,
                                     **columns)
  done = eval_pass.run(s.predict_step, variables, batches, s.mesh, s.rules, keep=keep)
  names = source.class_names()
  metrics = {"checkpoint": checkpoint, "model": config.model_name, "data": source_name(config.data),
             "split": split, "skipped": done.skipped,
             **report.classification(done.sums, done.rows, names, s.multi_label)}
  if table:
    metrics["real"] = report.real(done.rows, table, real_by)
  if fewshot_shots:
    fewshot = evaluators.FewShot(s, source, config.data, split, config.eval_batch_size,
                                 shots=fewshot_shots, seeds=fewshot_seeds, l2=fewshot_l2,
                                 train_split=fewshot_train_split)
    metrics["fewshot"] = report.fewshot(fewshot.accuracies(variables), seeds=fewshot.seeds,
                                        l2=fewshot.l2, train_split=fewshot.train_split, split=split)
  what = f"{config.model_name} on {source_name(config.data)} split {split!r}"
  written = report.write(output, metrics, names, title=what) if jax.process_index() == 0 else []
  return written, metrics, report.summary(metrics, what)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if not values["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from vit_jax import multihost, multihost_flags  # pylint: disable=import-outside-toplevel
  multihost_flags.connect()
  import jax  # pylint: disable=import-outside-toplevel
  from vit_jax.data.sources import hide_gpus_from_tensorflow  # pylint: disable=import-outside-toplevel
  hide_gpus_from_tensorflow()
  try:
    shots = [int(k) for k in values.fewshot]
  except ValueError:
    raise app.UsageError(f"--fewshot={','.join(values.fewshot)}: give numbers of shots, e.g. "
                         "1,5,10,25") from None
  try:
    with multihost.stop_together():
      written, _, lines = run(
          values.config, paths.expand(values.checkpoint), paths.expand(values.output),
          split=values.split, real_labels_file=paths.expand(values.real_labels),
          real_by=values.real_by, fewshot_shots=shots, fewshot_seeds=values.fewshot_seeds,
          fewshot_train_split=values.fewshot_train_split, fewshot_l2=values.fewshot_l2)
  except (ValueError, FileNotFoundError) as e:  # a checkpoint of another model, a bad labels file
    raise SystemExit(f"error: {e}") from None
  if jax.process_index() == 0:
    print("\n".join(lines + [f"wrote {', '.join(written)}"]))
