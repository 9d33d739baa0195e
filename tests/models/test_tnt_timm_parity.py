"""Our TNT computes the same logits as timm's TNT given the same weights (float32, 1e-5).

The fixtures are written by tests/fixtures/make_timm_tnt_fixtures.py in a scratch torch+timm
environment; this test needs neither torch nor timm.
"""
import json
import pathlib

import jax
import numpy as np
import pytest

from vit_jax.convert import from_torch
from vit_jax.models import create_model

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
NAMES = ("timm_tnt_p16", "timm_tnt_p8_s3")
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
  """Translates timm TNT arguments into create_model overrides for the same function."""
  assert kwargs["global_pool"] == "token" and not kwargs["qkv_bias"]
  return dict(
      image_size=kwargs["img_size"], patch_size=kwargs["patch_size"],
      inner_stride=kwargs["first_stride"], outer_dim=kwargs["embed_dim"],
      inner_dim=kwargs["inner_dim"], num_layers=kwargs["depth"],
      outer_num_heads=kwargs["num_heads_outer"], inner_num_heads=kwargs["num_heads_inner"],
      outer_mlp_ratio=kwargs["mlp_ratio"], inner_mlp_ratio=4.0,  # timm's inner MLP is always 4x.
      num_classes=kwargs["num_classes"])


def our_logits(state: dict, images: np.ndarray, **overrides) -> np.ndarray:
  params, report = from_torch("TNT-test", state, **overrides)
  assert not (report.unused or report.missing or report.initialized), report
  model = create_model("TNT-test", **overrides)
  return np.asarray(jax.jit(model.apply)({"params": params}, images))


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_timm(name):
  kwargs, state, images, expected = load_fixture(name)
  got = our_logits(state, images, **overrides_for(kwargs))
  assert got.dtype == np.float32 and got.shape == expected.shape
  diff = np.abs(got - expected).max()
  assert diff <= TOLERANCE, f"{name}: max |logits diff| {diff:.3g} > {TOLERANCE}"


def test_fixture_detects_tanh_gelu():
  """The check is sharp enough to see the tanh GELU of the official JAX ViT."""
  kwargs, state, images, expected = load_fixture("timm_tnt_p16")
  overrides = {**overrides_for(kwargs), "gelu_approximate": True}
  assert np.abs(our_logits(state, images, **overrides) - expected).max() > 10 * TOLERANCE


def test_pixel_positions_are_permuted_from_timm_channel_first_layout():
  """timm stores pixel_pos as (1, c, rows, cols); reading it as a plain reshape would be wrong."""
  kwargs, state, _, _ = load_fixture("timm_tnt_p16")
  params, _ = from_torch("TNT-test", state, **overrides_for(kwargs))
  pixel_pos = state["pixel_pos"]  # (1, 8, 4, 4)
  assert params["pixel_pos_embedding"].shape == (1, 16, 8)
  np.testing.assert_array_equal(params["pixel_pos_embedding"][0, 1 * 4 + 2], pixel_pos[0, :, 1, 2])


@pytest.mark.parametrize("extra_key,message", [
    ("blocks.0.proj.bias", "legacy TNT"),
    ("blocks.1.attn_in.qk.bias", "q/k/v biases"),
    ("outer_pos", "official repository's names"),
])
def test_other_tnt_layouts_are_rejected_with_what_they_are(extra_key, message):
  kwargs, state, _, _ = load_fixture("timm_tnt_p16")
  with pytest.raises(ValueError, match=message):
    from_torch("TNT-test", {**state, extra_key: np.zeros(1, np.float32)}, **overrides_for(kwargs))
