"""The default job's trained checkpoint (tests/default_job.py) through every command a downstream team
uses: evaluate gives the trainer's own final figures, predict names the digits, and each of the four
export formats, read back by its own runtime, gives the JAX model's logits.

(The Figure 7 analyses of the same checkpoint are specified in tests/analysis/test_command.py.)
"""
import jax
import numpy as np
import onnxruntime
import pytest
import safetensors.numpy
import tensorflow as tf
from PIL import Image

from vit_jax import predict
from vit_jax.checkpoint.params import restore_params
from vit_jax.convert import from_torch_variables
from vit_jax.data import pipeline, sources
from vit_jax.evaluate import command as evaluate
from vit_jax.export import formats, saved_model, trained as trained_lib

from . import default_job

SAMPLES = 8
TOLERANCE = 1e-4  # the bound for every runtime against the JAX logits, float32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = default_job.save_run(tmp_path_factory.mktemp("default_job"))
  job = default_job.config()
  source = sources.get_source(job.data)
  raw = list(source.read("test").take(SAMPLES).as_numpy_iterator())
  batch = next(pipeline.eval_batches(job.data, batch_size=SAMPLES, image_size=32))
  return workdir, job, raw, batch


@pytest.fixture(scope="module")
def jax_logits(run):
  """The model's logits on the first test digits, through the eval pipeline, from the saved run."""
  workdir, _, _, batch = run
  trained = trained_lib.load(str(workdir))
  logits = jax.jit(lambda x: trained.model.apply(trained.variables, x, train=False))(batch["image"])
  return trained, np.asarray(logits)


def test_evaluate_gives_the_trainers_own_final_figures(run, tmp_path):
  workdir, job, _, _ = run
  _, metrics, lines = evaluate.run(job, str(workdir), str(tmp_path))
  assert metrics["examples"] == default_job.TEST_EXAMPLES
  assert metrics["accuracy"] == pytest.approx(default_job.TEST_ACCURACY, abs=1e-9)
  assert metrics["loss"] == pytest.approx(default_job.TEST_LOSS, rel=1e-4)
  assert any("0.986" in line for line in lines)


def test_predict_names_each_digit(run, tmp_path):
  workdir, _, raw, _ = run
  files = []
  for i, example in enumerate(raw):
    files.append(str(tmp_path / f"digit{i}.png"))
    Image.fromarray(example["image"]).save(files[-1])
  results, _, kind = predict.predict(str(workdir), files)
  assert kind == "softmax"
  assert [top[0][1] for _, top in results] == [str(int(example["label"])) for example in raw]
  assert all(top[0][2] > 0.5 for _, top in results)


def test_the_npz_holds_the_trained_parameters_bit_for_bit(run, tmp_path):
  formats.export(str(run[0]), "npz", str(tmp_path / "vit.npz"))
  back, fixture = restore_params(str(tmp_path / "vit.npz")), restore_params(str(default_job.FIXTURE))
  jax.tree.map(np.testing.assert_array_equal, back, fixture)


def test_safetensors_converts_back_to_the_same_logits(run, jax_logits, tmp_path):
  trained, want = jax_logits
  formats.export(str(run[0]), "safetensors", str(tmp_path / "vit.safetensors"))
  state = safetensors.numpy.load_file(str(tmp_path / "vit.safetensors"))
  variables, report = from_torch_variables(trained.model_name, state, **trained.overrides)
  assert not (report.unused or report.missing)
  got = jax.jit(lambda x: trained.model.apply(variables, x, train=False))(run[3]["image"])
  np.testing.assert_array_equal(np.asarray(got), want)


def test_the_saved_model_serves_raw_digits_with_the_jax_logits(run, jax_logits, tmp_path):
  _, want = jax_logits
  formats.export(str(run[0]), "saved_model", str(tmp_path / "saved"))
  serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
  images = np.stack([example["image"] for example in run[2]])  # uint8, 8x8: resized inside
  got = serve(**{saved_model.INPUT: tf.constant(images)})[saved_model.OUTPUT].numpy()
  assert np.abs(got - want).max() <= TOLERANCE and np.abs(want).max() > 5
  assert list(got.argmax(axis=1)) == [int(example["label"]) for example in run[2]]


def test_onnx_gives_the_jax_logits(run, jax_logits, tmp_path):
  _, want = jax_logits
  formats.export(str(run[0]), "onnx", str(tmp_path / "vit.onnx"))
  session = onnxruntime.InferenceSession(str(tmp_path / "vit.onnx"))
  (got,) = session.run(None, {"images": np.asarray(run[3]["image"], np.float32)})
  assert np.abs(got - want).max() <= TOLERANCE
