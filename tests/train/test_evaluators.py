"""Specification of the evaluators beyond plain classification, on a stand-in ViT-micro/4 for the
digits (random weights: nothing is trained):
  - 'fewshot' reads the model's pre-logit features (its head input: the head applied to them gives
    the eval step's logits) of every example in the split's order, with its label, and fits and
    scores the few-shot probes on them; on another dataset (options.data) too;
  - 'real' scores top-1 predictions against a hand-made labels file, leaving empty sets out;
  - options an evaluator does not take, and data keys config.data lacks, are refused naming them;
  - an evaluator reads its split through the pipeline once when the pass fits in
    data.eval_cache_mib, and every time when that is 0, with the same metrics.
"""
import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from vit_jax.configuration import eval_config
from vit_jax.data import pipeline, sources
from vit_jax.metrics import fewshot as fewshot_lib
from vit_jax.train import eval_pass, evaluators
from vit_jax.train.loop import setup

from ..states import digits_config, random_state


@pytest.fixture(scope="module")
def stand_in():
  """(config, source, Setup, variables, test logits and labels in the split's order)."""
  config = digits_config()
  source = sources.get_source(config.data)
  s = setup(config, source)
  state = random_state(s.abstract_state, scale=0.3)
  variables = {"params": state.params, **state.model_state}
  batches = pipeline.eval_batches(config.data, source=source, batch_size=64, image_size=16,
                                  indices=True)
  done = eval_pass.run(s.predict_step, variables, batches, s.mesh, s.rules,
                       keep=lambda out, local: {"logits": out["logits"], "label": local["label"],
                                                "index": local[pipeline.INDEX]})
  assert list(done.rows["index"]) == list(range(359))  # one process: already in the split's order
  return config, source, s, variables, done.rows["logits"], done.rows["label"]


def test_fewshot_fits_probes_on_the_head_input_of_every_example_in_order(stand_in):
  config, source, s, variables, logits, labels = stand_in
  fewshot = evaluators.EVALUATORS.get("fewshot")(s, source, config.data, "test", 64, shots=(1, 5),
                                                 seeds=2, train_split="train[:200]")
  features, feature_labels = fewshot.features(variables, "test")
  head = variables["params"]["head"]
  np.testing.assert_allclose(features @ np.asarray(head["kernel"]) + np.asarray(head["bias"]), logits,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(feature_labels, labels)
  train, train_labels = fewshot.features(variables, "train[:200]")
  assert train.shape == (200, 32)
  expected = fewshot_lib.evaluate(train, train_labels, features, labels, 10, (1, 5), seeds=2)
  assert fewshot(variables) == {"1shot_accuracy": np.mean(expected[1]),
                                "5shot_accuracy": np.mean(expected[5])}
  assert 0.1 < np.mean(expected[5]) <= 1.0  # random features of digits still carry some signal


def test_real_scores_top1_against_each_set_and_leaves_empty_sets_out(stand_in, tmp_path):
  config, source, s, variables, logits, labels = stand_in
  predicted = logits.argmax(axis=-1)
  entries = [[int(y)] if i % 3 == 0 else [] if i % 3 == 1 else [int(y), (int(y) + 1) % 10]
             for i, y in enumerate(labels)]
  (tmp_path / "real.json").write_text(json.dumps(entries))
  evals = ml_collections.ConfigDict({"real": eval_config(kind="real", labels=str(tmp_path / "real.json"))})
  (real,) = evaluators.build_evaluators(evals, s, source, config.data, 64)
  result = real.run(variables)
  counted = [i for i in range(359) if entries[i]]
  assert result["examples"] == len(counted) == 239 and result["without_labels"] == 120
  assert result["accuracy"] == pytest.approx(np.mean([predicted[i] in entries[i] for i in counted]))
  assert result["original_accuracy"] == pytest.approx(np.mean(predicted == labels))


def _folder(root, classes=3):
  for split, count in (("train", 3), ("test", 2)):
    for c in range(classes):
      for i in range(count):
        path = root / split / f"class_{c}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6, 3), 80 * c + 10 * i, np.uint8)).save(path)
  return dict(source="folder", root=str(root), pp_eval="", pp_batch="")


def test_fewshot_evaluates_another_dataset_and_bad_options_are_refused_naming_them(stand_in, tmp_path):
  config, source, s, variables, _, _ = stand_in
  other = _folder(tmp_path)
  evals = ml_collections.ConfigDict({"few": eval_config(kind="fewshot", shots=(1, 3), seeds=1,
                                                        data=other)})
  (few,) = evaluators.build_evaluators(evals, s, source, config.data, 64)
  result = few.run(variables)
  assert sorted(result) == ["1shot_accuracy", "3shot_accuracy"]
  assert all(0.0 <= value <= 1.0 for value in result.values())
  for entry, message in [
      (eval_config(kind="fewshot", shot=5), r"config.evals.bad.options.shot: evaluator 'fewshot' takes "
                                            r"no such option; it takes shots, seeds, l2, train_split"),
      (eval_config(kind="fewshot", data={"sorce": "folder"}),
       r"config.evals.bad.options.data.sorce is not a key of config.data"),
      (eval_config(data=other), r"the 'classification' evaluator scores the model's 10 classes, and "
                                r"FolderSource has 3"),
      (eval_config(kind="real"), r"the 'real' evaluator needs options.labels")]:
    with pytest.raises(ValueError, match=message):
      evaluators.build_evaluators(ml_collections.ConfigDict({"bad": entry}), s, source, config.data, 64)


def test_later_passes_come_from_host_memory_unless_eval_cache_mib_is_0(stand_in, monkeypatch):
  config, source, s, variables, *_ = stand_in
  built, eval_batches = [], pipeline.eval_batches

  def counted(*args, **kwargs):
    built.append(1)
    return eval_batches(*args, **kwargs)
  monkeypatch.setattr(pipeline, "eval_batches", counted)
  for cache_mib, passes_built in ((512, 1), (0, 3)):
    data = evaluators.other_data(config.data, {"eval_cache_mib": cache_mib}, "test")
    classify = evaluators.EVALUATORS.get("classification")(s, source, data, "test", 64)
    built.clear()
    results = [classify(variables) for _ in range(3)]
    assert len(built) == passes_built
    assert results[0] == results[1] == results[2] and results[0]["examples"] == 359
