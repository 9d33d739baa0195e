"""Evaluators by name: `config.evals` lists named entries, each a registered evaluator with its own
cadence and split, built once per run (its steps are Setup's, compiled once) and run on a state.

An evaluator factory is `fn(setup, source, data_config, split, batch_size) -> run(variables) ->
{metric: value}`; register one with @register_evaluator(type). The loop logs each metric as
'<entry name>_<metric>' in metrics.jsonl and TensorBoard.
"""
import dataclasses
from typing import Any, Callable

import jax
import ml_collections
from jax.experimental import multihost_utils

from vit_jax.evaluate import metrics as metrics_lib
from vit_jax import parallel
from vit_jax.data import pipeline, sources
from vit_jax.plugins import Registry
from vit_jax.train import masked_patch as masked_patch_lib
from vit_jax.train.build import Setup

Run = Callable[[Any], dict[str, float]]
Factory = Callable[..., Run]
EVALUATORS: Registry[Factory] = Registry("evaluator", "config.evals.<name>.type")
register_evaluator = EVALUATORS.register  # decorator: a factory as `type` of a config.evals entry


@dataclasses.dataclass
class Evaluator:
  """One config.evals entry, built: runs every `every` steps (0: only at the end of training)."""
  name: str
  every: int
  run: Run

  def due(self, step: int, total_steps: int) -> bool:
    """Periodic evaluations before the last step (the final one always runs)."""
    return bool(self.every) and step % self.every == 0 and step < total_steps


def build_evaluators(evals: ml_collections.ConfigDict, s: Setup, source: sources.Source,
                     data_config: ml_collections.ConfigDict, batch_size: int) -> list[Evaluator]:
  """Builds every entry of config.evals once; an unknown type or a bad cadence names its entry."""
  built = []
  for name, entry in evals.items():
    if entry.type not in EVALUATORS:
      raise ValueError(f"config.evals.{name}.type={entry.type!r} is not a registered evaluator; "
                       f"choose one of {', '.join(EVALUATORS.names())}")
    if entry.every < 0:
      raise ValueError(f"config.evals.{name}.every={entry.every} must be >= 0 (0: at the end only)")
    split = entry.split or data_config.test_split
    run = EVALUATORS.get(entry.type)(s, source, data_config, split, batch_size)
    built.append(Evaluator(name, int(entry.every), run))
  return built


def _batches(s: Setup, source, data_config, split, batch_size):
  return pipeline.eval_batches(
      data_config, source=source, split=split, batch_size=batch_size, image_size=s.image_size,
      process_index=jax.process_index(), process_count=jax.process_count())


def _sums(s: Setup, variables, batches, keep_logits: bool):
  """Runs the compiled eval step over every batch; returns the summed counts and, when asked, a
  host-side metrics_lib.Metrics fed with every example's logits."""
  totals = {"correct": 0.0, "correct_top5": 0.0, "loss_sum": 0.0, "count": 0.0}
  ranking = metrics_lib.Metrics()
  step = s.predict_step if keep_logits else s.eval_step
  with parallel.activate(s.mesh, s.rules):
    for local in batches:
      batch = parallel.global_batch(local, s.mesh, s.rules)
      out = step(variables, batch)
      if keep_logits:  # ranking metrics need every score: gather them on the host
        gathered = multihost_utils.process_allgather(
            {"logits": out.pop("logits"), "label": batch["label"], "mask": batch["mask"]}, tiled=True)
        ranking.update(gathered["logits"], gathered["label"], gathered["mask"])
      for key, value in jax.device_get(out).items():
        totals[key] += float(value)
  return totals, ranking


def _classification_metrics(totals) -> dict[str, float]:
  count = max(totals["count"], 1.0)
  return {"accuracy": totals["correct"] / count, "top5_accuracy": totals["correct_top5"] / count,
          "loss": totals["loss_sum"] / count, "examples": totals["count"]}


@register_evaluator("classification")
def classification(s: Setup, source, data_config, split: str, batch_size: int) -> Run:
  """Top-1 and top-5 accuracy and mean loss over every example of the split, each counted once;
  for multi-label data also precision@1 and mean average precision."""
  def run(variables) -> dict[str, float]:
    totals, ranking = _sums(s, variables, _batches(s, source, data_config, split, batch_size),
                            keep_logits=s.multi_label)
    result = _classification_metrics(totals)
    if s.multi_label:
      ranked = ranking.result()
      result.update(precision_at_1=ranked["precision_at_1"],
                    mean_average_precision=ranked["mean_average_precision"])
    return result
  return run


@register_evaluator("multilabel")
def multilabel(s: Setup, source, data_config, split: str, batch_size: int) -> Run:
  """Precision@1 and mean average precision (plus top-1/top-5 and loss) for multi-hot labels."""
  if not s.multi_label:
    raise ValueError(f"the 'multilabel' evaluator needs multi-label data; {source.describe()} "
                     "has one label per example: use type='classification'")
  return classification(s, source, data_config, split, batch_size)


@register_evaluator("masked_patch")
def masked_patch(s: Setup, source, data_config, split: str, batch_size: int) -> Run:
  """Masked patch prediction on the split (train/masked_patch.py): the accuracy and mean loss of
  the corrupted patches' colour predictions, the corruption fixed per batch (the same in every
  evaluation of a run). The pretraining evaluation: the class head is not trained by that loss."""
  if not s.model.interface.masked_patch_prediction:
    raise ValueError("the 'masked_patch' evaluator needs a model with masked patch prediction: set "
                     "config.model.masked_patch_prediction=True, or use type='classification'")
  step = jax.jit(masked_patch_lib.make_eval_step(s.model, s.seed))

  def run(variables) -> dict[str, float]:
    totals = {"correct": 0.0, "loss_sum": 0.0, "patches": 0.0, "count": 0.0}
    with parallel.activate(s.mesh, s.rules):
      for index, local in enumerate(_batches(s, source, data_config, split, batch_size)):
        out = step(variables, parallel.global_batch(local, s.mesh, s.rules), index)
        for key, value in jax.device_get(out).items():
          totals[key] += float(value)
    patches = max(totals["patches"], 1.0)
    return {"accuracy": totals["correct"] / patches, "loss": totals["loss_sum"] / patches,
            "patches": totals["patches"], "examples": totals["count"]}
  return run
