"""Our ViT computes the same logits as timm's VisionTransformer given the same weights (float32, 1e-5).

The fixtures are written by tests/fixtures/make_timm_fixtures.py in a scratch torch+timm environment;
this test needs neither torch nor timm.
"""
import json
import pathlib

import numpy as np
import pytest

from vit_jax.convert import from_torch
from vit_jax.models import create_model

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
NAMES = ("timm_vit_token", "timm_vit_gap", "timm_vit_p16")
TOLERANCE = 1e-5


def load_fixture(name: str) -> tuple[dict, dict, np.ndarray, np.ndarray]:
  """Returns (timm kwargs, state dict as float32 numpy, NHWC float32 images, timm logits)."""
  with np.load(FIXTURES / f"{name}.npz") as data:
    kwargs = json.loads(str(data["kwargs"]))
    state = {k[len("param/"):]: data[k].astype(np.float32) for k in data.files if k.startswith("param/")}
    images = data["input_nchw"].astype(np.float32).transpose(0, 2, 3, 1)
    logits = data["logits"]
  return kwargs, state, images, logits


def overrides_for(kwargs: dict) -> dict:
  """Translates timm VisionTransformer arguments into create_model overrides for the same function."""
  assert kwargs.get("fc_norm") in (None, False) and kwargs.get("reg_tokens", 0) == 0
  pooled = kwargs["global_pool"] == "avg" and not kwargs["class_token"]
  assert pooled or kwargs["global_pool"] == "token"
  return dict(
      hidden_size=kwargs["embed_dim"], num_layers=kwargs["depth"], num_heads=kwargs["num_heads"],
      mlp_dim=int(kwargs["embed_dim"] * kwargs["mlp_ratio"]), patch_size=kwargs["patch_size"],
      image_size=kwargs["img_size"], num_classes=kwargs["num_classes"],
      classifier="gap" if pooled else "token", gelu_approximate=False, layer_norm_epsilon=1e-6)


def our_logits(state: dict, images: np.ndarray, **overrides) -> np.ndarray:
  params, report = from_torch("ViT-micro/4", state, **overrides)
  assert not (report.unused or report.missing or report.initialized), report
  model = create_model("ViT-micro/4", **overrides)
  return np.asarray(model.apply({"params": params}, images, train=False))


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_timm(name):
  kwargs, state, images, expected = load_fixture(name)
  got = our_logits(state, images, **overrides_for(kwargs))
  assert got.dtype == np.float32 and got.shape == expected.shape
  diff = np.abs(got - expected).max()
  assert diff <= TOLERANCE, f"{name}: max |logits diff| {diff:.3g} > {TOLERANCE}"


def test_fixture_detects_tanh_gelu():
  """The check is sharp enough to see the tanh GELU of the official JAX ViT (max error 4.7e-4)."""
  kwargs, state, images, expected = load_fixture("timm_vit_token")
  overrides = {**overrides_for(kwargs), "gelu_approximate": True}
  assert np.abs(our_logits(state, images, **overrides) - expected).max() > 10 * TOLERANCE
