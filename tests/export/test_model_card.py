"""Every export writes a model card beside it (PATH.model_card.md and .json) stating the model and its
config, parameter count, FLOPs per image, input and preprocessing, class names, training data and
steps, the run's latest evaluation and the code's commit."""
import json
import subprocess

import numpy as np
import pytest

from vit_jax import flops
from vit_jax.export import formats

from . import tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A stand-in run of ViT-testing on the digits with class names, exported as safetensors."""
  workdir = tmp_path_factory.mktemp("run")
  variables = tiny.write_run(workdir, step=4)
  (workdir / "class_names.json").write_text(json.dumps([f"digit {i}" for i in range(10)]))
  output = workdir.parent / "vit.safetensors"
  trained, md_path, json_path = formats.export(str(workdir), "safetensors", str(output))
  return dict(workdir=workdir, variables=variables, trained=trained, output=output,
              card=json.loads(open(json_path).read()), markdown=open(md_path).read(),
              paths=(md_path, json_path))


def test_the_card_lies_beside_the_export(run):
  assert run["paths"] == (f"{run['output']}.model_card.md", f"{run['output']}.model_card.json")


def test_model_size_and_cost(run):
  card, trained = run["card"], run["trained"]
  assert card["model"]["name"] == "ViT-testing" and card["model"]["family"] == "VisionTransformer"
  assert card["model"]["fields"]["num_classes"] == 10 and card["model"]["fields"]["hidden_size"] == 10
  assert card["model"]["run_config"]["data"]["source"] == "digits"
  assert card["parameters"] == sum(np.size(v) for v in tiny.flat(run["variables"]["params"]).values())
  assert card["flops_per_image"] == flops.forward_flops_per_example(trained.model) > 0


def test_input_classes_and_training(run):
  card = run["card"]
  assert card["input"] == {"image_size": 32, "layout": "RGB",
                           "eval_pipeline": "decode|resize(32)|value_range(-1, 1)"}
  assert card["classes"] == {"count": 10, "names": [f"digit {i}" for i in range(10)],
                             "names_from": str(run["workdir"] / "class_names.json")}
  training = card["training"]
  assert training["data"]["source"] == "digits" and training["durations"] == {"steps": 4}
  assert training["last_logged_step"] == 4 and training["batch_size"] == 32


def test_the_latest_evaluation_and_the_commit(run):
  card = run["card"]
  assert card["evaluation"] == {"step": 4, "test_accuracy": 0.5, "test_loss": 1.5}
  head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
  assert card["code"]["commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
  assert card["export"]["format"] == "safetensors" and card["export"]["source"] == str(run["workdir"])


def test_markdown_states_the_same_facts(run):
  text = run["markdown"]
  for fact in ("# Model card: ViT-testing (safetensors)", f"| Parameters | {run['card']['parameters']:,} |",
               r"`decode\|resize(32)\|value_range(-1, 1)`", "| test_accuracy | 0.5 |",
               "digit 0, digit 1", "configured duration: steps=4; last logged step: 4"):
    assert fact in text, fact


def test_formats_needing_the_architecture_refuse_a_bare_npz(run, tmp_path):
  from vit_jax.export import save_npz  # pylint: disable=import-outside-toplevel
  save_npz(run["variables"]["params"], tmp_path / "bare.npz")
  with pytest.raises(ValueError, match="not inside a training workdir with a config.json"):
    formats.export(str(tmp_path / "bare.npz"), "onnx", str(tmp_path / "bare.onnx"))


def test_a_checkpoint_of_another_model_is_refused_naming_variables(run, tmp_path):
  config = json.loads((run["workdir"] / "config.json").read_text())
  config["model"]["hidden_size"] = 12
  other = tmp_path / "other"
  other.mkdir()
  (other / "config.json").write_text(json.dumps(config))
  (other / "checkpoints").symlink_to(run["workdir"] / "checkpoints")
  with pytest.raises(ValueError, match=r"does not hold a ViT-testing .* variables differ, e\.g\. "):
    formats.export(str(other), "safetensors", str(tmp_path / "x.safetensors"))
