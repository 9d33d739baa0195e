"""Evaluators by name: `config.evals` lists named entries, each a registered evaluator with its own
cadence, split and options, built once per run (its steps compile once) and run on a state.

An evaluator factory is `fn(setup, source, data_config, split, batch_size, **options) ->
run(variables) -> {metric: value}`, its options keyword-only; register one with
@register_evaluator(type). An entry's `options.data` overrides keys of config.data for that entry
alone: another dataset (few-shot evaluation of a pretraining run on a small labelled one). The loop
logs each metric as '<entry name>_<metric>' in metrics.jsonl and TensorBoard.
"""
import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import parallel, paths
from vit_jax.data import pass_cache, pipeline, sources, split_slices
from vit_jax.metrics import fewshot as fewshot_lib
from vit_jax.metrics import classification as metrics_lib
from vit_jax.metrics import real_labels
from vit_jax.models.interface import INTERMEDIATES
from vit_jax.plugins import Registry
from vit_jax.train import eval_pass
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
  """Builds every entry of config.evals once; an unknown type, option or data key, or a bad
  cadence names its entry."""
  built = []
  for name, entry in evals.items():
    if entry.type not in EVALUATORS:
      raise ValueError(f"config.evals.{name}.type={entry.type!r} is not a registered evaluator; "
                       f"choose one of {', '.join(EVALUATORS.names())}")
    if entry.every < 0:
      raise ValueError(f"config.evals.{name}.every={entry.every} must be >= 0 (0: at the end only)")
    options = dict(entry.get("options") or {})
    data, entry_source = data_config, source
    if options.get("data"):
      data = other_data(data_config, options.pop("data"), f"config.evals.{name}.options.data")
      entry_source = sources.get_source(data)
    options.pop("data", None)
    factory = EVALUATORS.get(entry.type)
    check_options(factory, options, f"config.evals.{name}.options", entry.type)
    split = entry.split or data.test_split
    built.append(Evaluator(name, int(entry.every),
                           factory(s, entry_source, data, split, batch_size, **options)))
  return built


def other_data(data_config: ml_collections.ConfigDict, overrides, where: str
               ) -> ml_collections.ConfigDict:
  """A copy of config.data with `overrides` (a dict of its keys) applied; a key config.data does
  not have is an error naming it."""
  merged = ml_collections.ConfigDict(data_config.to_dict())
  for key, value in dict(overrides).items():
    if key not in merged:
      raise ValueError(f"{where}.{key} is not a key of config.data (its keys: "
                       f"{', '.join(sorted(merged.keys()))})")
    merged[key] = value
  return merged


def check_options(factory: Factory, options: dict, where: str, kind: str) -> None:
  """Every option must be a keyword-only parameter of the evaluator's factory."""
  accepted = [p.name for p in inspect.signature(factory).parameters.values()
              if p.kind == inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"{where}.{unknown[0]}: evaluator {kind!r} takes no such option; it takes "
                     f"{', '.join(accepted + ['data']) if accepted else 'only data'}")


def split_batches(s: Setup, source, data_config, split, batch_size, **columns):
  """One pass over this process's shard of `split` (pipeline.eval_batches), in as many batches as
  `batch_size` needs and each batch no larger than it must be (pipeline.balanced_eval_batch_size:
  less padding to compute)."""
  batch_size = pipeline.balanced_eval_batch_size(
      source, split, batch_size, parallel.batch_shards(s.mesh, s.rules), jax.process_count())
  return pipeline.eval_batches(
      data_config, source=source, split=split, batch_size=batch_size, image_size=s.image_size,
      process_index=jax.process_index(), process_count=jax.process_count(), **columns)


def _passes(s: Setup, source, data_config, split, batch_size, **columns) -> pass_cache.PassCache:
  """Passes over `split` (split_batches); after the first, from host memory where a pass fits in
  data.eval_cache_mib."""
  return pass_cache.PassCache(
      lambda: split_batches(s, source, data_config, split, batch_size, **columns),
      int(data_config.eval_cache_mib * 2 ** 20))


def _check_classes(s: Setup, source, kind: str) -> None:
  if source.num_classes != s.num_classes:
    raise ValueError(f"the {kind!r} evaluator scores the model's {s.num_classes} classes, and "
                     f"{source.describe()} has {source.num_classes}: evaluate data of the model's "
                     "classes (or use type='fewshot', which reads features only)")


def classification_metrics(sums: dict[str, float]) -> dict[str, float]:
  """Top-1 and top-5 accuracy, mean loss and the examples counted, from the eval step's sums."""
  count = max(sums["count"], 1.0)
  return {"accuracy": sums["correct"] / count, "top5_accuracy": sums["correct_top5"] / count,
          "loss": sums["loss_sum"] / count, "examples": sums["count"]}


def _logits_and_labels(outputs, local):
  return {"logits": outputs["logits"], "label": local["label"]}


@register_evaluator("classification")
def classification(s: Setup, source, data_config, split: str, batch_size: int) -> Run:
  """Top-1 and top-5 accuracy and mean loss over every example of the split, each counted once;
  for multi-label data also precision@1 and mean average precision."""
  _check_classes(s, source, "classification")
  passes = _passes(s, source, data_config, split, batch_size)

  def run(variables) -> dict[str, float]:
    batches = passes()
    if not s.multi_label:
      return classification_metrics(eval_pass.run(s.eval_step, variables, batches, s.mesh,
                                                  s.rules).sums)
    done = eval_pass.run(s.predict_step, variables, batches, s.mesh, s.rules,
                         keep=_logits_and_labels)  # ranking metrics need every score
    ranking = metrics_lib.Metrics()
    ranking.update(done.rows["logits"], done.rows["label"])
    ranked = ranking.result()
    return {**classification_metrics(done.sums), "precision_at_1": ranked["precision_at_1"],
            "mean_average_precision": ranked["mean_average_precision"]}
  return run


@register_evaluator("multilabel")
def multilabel(s: Setup, source, data_config, split: str, batch_size: int) -> Run:
  """Precision@1 and mean average precision (plus top-1/top-5 and loss) for multi-hot labels."""
  if not s.multi_label:
    raise ValueError(f"the 'multilabel' evaluator needs multi-label data; {source.describe()} "
                     "has one label per example: use type='classification'")
  return classification(s, source, data_config, split, batch_size)


def real_entries(local: dict[str, np.ndarray], by: str, start: int = 0) -> np.ndarray:
  """The ReaL labels-file entry of each row of a local eval batch (-1 for padding): by='position'
  reads pipeline.INDEX (from `start`, a slice's first position), by='file_name' the example key."""
  real = np.asarray(local["mask"]) > 0
  entries = np.full(len(real), -1, np.int64)
  if by == "position":
    entries[real] = real_labels.entries_by_position(local[pipeline.INDEX][real], start)
  else:
    entries[real] = real_labels.entries_by_file_name(local[pipeline.EXAMPLE_KEY][real])
  return entries


def real_columns(by: str) -> dict[str, bool]:
  """What the eval batches must carry to find ReaL entries `by` (eval_batches keyword arguments)."""
  if by not in real_labels.BY:
    raise ValueError(f"ReaL entries are found by one of {real_labels.BY}, not {by!r}")
  return {"indices": by == "position", "keys": by == "file_name"}


@register_evaluator("real")
def real(s: Setup, source, data_config, split: str, batch_size: int, *, labels: str = "",
         by: str = "position") -> Run:
  """ReaL-style accuracy (metrics/real_labels.py): top-1 predictions against each example's set of
  correct classes in the labels file `labels` (ImageNet ReaL's real.json format), examples with an
  empty set left out; an example's entry is found by='position' (in the split) or by='file_name'
  (in its key). Also reports the accuracy on the split's own labels, as 'original_accuracy'."""
  if not labels:
    raise ValueError("the 'real' evaluator needs options.labels: the path of a ReaL labels file "
                     "(the format of ImageNet ReaL's real.json)")
  columns = real_columns(by)
  _check_classes(s, source, "real")
  table = real_labels.load(paths.expand(labels), s.num_classes)
  start = split_slices.positions(source, split).start
  passes = _passes(s, source, data_config, split, batch_size, **columns)

  def keep(outputs, local):
    return {"prediction": np.argmax(outputs["logits"], axis=-1),
            "entry": real_entries(local, by, start)}

  def run(variables) -> dict[str, float]:
    done = eval_pass.run(s.predict_step, variables, passes(), s.mesh, s.rules, keep=keep)
    result = real_labels.accuracy(done.rows["prediction"], done.rows["entry"], table)
    return {**result, "original_accuracy": done.sums["correct"] / max(done.sums["count"], 1.0)}
  return run


def features_step(model) -> Callable[[Any, dict], dict]:
  """(variables, batch) -> {'features': the model's head input (its pre-logits), float32}."""
  def step(variables, batch):
    _, state = model.apply(variables, batch["image"], train=False, mutable=[INTERMEDIATES])
    return {"features": state[INTERMEDIATES]["head_input"][0].astype(jnp.float32)}
  return step


class FewShot:
  """Few-shot linear evaluation of the frozen pre-logit features (metrics/fewshot.py): shots drawn
  from `train_split`, accuracy on `split`, both read in full each time (slice large splits). Its
  feature step compiles once; calling it gives '<k>shot_accuracy', the mean over seeds."""

  def __init__(self, s: Setup, source, data_config, split: str, batch_size: int, *,
               shots=fewshot_lib.DEFAULT_SHOTS, seeds: int = fewshot_lib.DEFAULT_SEEDS,
               l2: float = fewshot_lib.DEFAULT_L2, train_split: str = ""):
    if source.multi_label:
      raise ValueError(f"few-shot evaluation needs single-label data, and {source.describe()} is "
                       "multi-label: point options.data at a single-label dataset")
    self.shots, self.seeds, self.l2 = tuple(int(k) for k in shots), int(seeds), float(l2)
    self.train_split = train_split or data_config.train_split
    self.split, self.num_classes = split, source.num_classes
    self._s, self._source, self._data, self._batch_size = s, source, data_config, batch_size
    self._step = jax.jit(features_step(s.model))
    self._passes: dict[str, pass_cache.PassCache] = {}

  def features(self, variables, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), labels (N,)) of every example of `split`, in the split's order."""
    if split not in self._passes:
      self._passes[split] = _passes(self._s, self._source, self._data, split, self._batch_size,
                                    indices=True)
    done = eval_pass.run(
        self._step, variables, self._passes[split](), self._s.mesh, self._s.rules,
        keep=lambda outputs, local: {"features": outputs["features"], "label": local["label"],
                                     "index": local[pipeline.INDEX]})
    order = np.argsort(done.rows["index"], kind="stable")
    return done.rows["features"][order], done.rows["label"][order]

  def accuracies(self, variables) -> dict[int, list[float]]:
    """{k: the test accuracy of each seed}."""
    train, train_labels = self.features(variables, self.train_split)
    test, test_labels = self.features(variables, self.split)
    return fewshot_lib.evaluate(train, train_labels, test, test_labels, self.num_classes,
                                self.shots, self.seeds, self.l2)

  def __call__(self, variables) -> dict[str, float]:
    return {f"{k}shot_accuracy": float(np.mean(per_seed))
            for k, per_seed in self.accuracies(variables).items()}


@register_evaluator("fewshot")
def fewshot(s: Setup, source, data_config, split: str, batch_size: int, *,
            shots=fewshot_lib.DEFAULT_SHOTS, seeds: int = fewshot_lib.DEFAULT_SEEDS,
            l2: float = fewshot_lib.DEFAULT_L2, train_split: str = "") -> Run:
  """Few-shot linear evaluation as in the ViT paper (FewShot): '<k>shot_accuracy' for each k of
  `shots`, the mean over `seeds`; shots from `train_split` (default: data.train_split)."""
  return FewShot(s, source, data_config, split, batch_size, shots=shots, seeds=seeds, l2=l2,
                 train_split=train_split)


@register_evaluator("masked_patch")
def masked_patch(s: Setup, source, data_config, split: str, batch_size: int) -> Run:
  """Masked patch prediction on the split (train/masked_patch.py): the accuracy and mean loss of
  the corrupted patches' colour predictions, the corruption fixed per batch (the same in every
  evaluation of a run). The pretraining evaluation: the class head is not trained by that loss."""
  if not s.model.interface.masked_patch_prediction:
    raise ValueError("the 'masked_patch' evaluator needs a model with masked patch prediction: set "
                     "config.model.masked_patch_prediction=True, or use type='classification'")
  step = jax.jit(masked_patch_lib.make_eval_step(s.model, s.seed))
  passes = _passes(s, source, data_config, split, batch_size)

  def run(variables) -> dict[str, float]:
    totals = {"correct": 0.0, "loss_sum": 0.0, "patches": 0.0, "count": 0.0}
    with parallel.activate(s.mesh, s.rules):
      for index, local in enumerate(passes()):
        out = step(variables, parallel.global_batch(local, s.mesh, s.rules), index)
        for key, value in jax.device_get(out).items():
          totals[key] += float(value)
    patches = max(totals["patches"], 1.0)
    return {"accuracy": totals["correct"] / patches, "loss": totals["loss_sum"] / patches,
            "patches": totals["patches"], "examples": totals["count"]}
  return run
