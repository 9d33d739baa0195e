"""The ONNX export runs in onnxruntime with the JAX model's logits (float32, 1e-4), any batch size."""
import jax
import numpy as np
import onnxruntime
import pytest

from vit_jax.export import onnx_model

from . import tiny

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  trained = tiny.trained("ViT-testing", image_size=32)
  path = tmp_path_factory.mktemp("onnx") / "vit.onnx"
  onnx_model.save_onnx(trained, path)
  return trained, onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_inputs_and_outputs_are_named_with_a_free_batch_dimension(exported):
  _, session = exported
  (images,), (logits,) = session.get_inputs(), session.get_outputs()
  assert (images.name, images.type, images.shape[1:]) == ("images", "tensor(float)", [32, 32, 3])
  assert isinstance(images.shape[0], str) and logits.name == "logits"


def test_logits_are_the_jax_models_for_any_batch_size(exported):
  trained, session = exported
  images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
  want = np.asarray(jax.jit(lambda x: trained.model.apply(trained.variables, x, train=False))(images))
  assert np.abs(want).max() > 0.1
  for batch in (3, 1):
    (got,) = session.run(None, {"images": images[:batch]})
    assert got.shape == (batch, 10)
    assert np.abs(got - want[:batch]).max() <= TOLERANCE
