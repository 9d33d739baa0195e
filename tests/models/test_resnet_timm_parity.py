"""Our BiT and R+ViT hybrid compute timm's logits given the same weights (float32).

With timm's two epsilons set (GroupNorm 1e-5; weight standardisation sqrt(var + 1e-8)), both families
match to 1e-5, well inside the tolerances asked of them (hybrid 5e-5, BiT 2e-4). The fixtures are
written by tests/fixtures/make_timm_resnet_fixtures.py in a scratch torch+timm environment; this test
needs neither torch nor timm.
"""
import json
import pathlib

import jax
import numpy as np
import pytest

from vit_jax.convert import from_torch
from vit_jax.models import create_model

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
BIT = ("timm_bit_2stage", "timm_bit_3stage_odd")
HYBRID = ("timm_hybrid_3stage", "timm_hybrid_stem")
TOLERANCE = 1e-5
# timm's numerics where they differ from the official models (our defaults).
TIMM_BIT = dict(weight_std_epsilon=1e-8)
TIMM_HYBRID = dict(group_norm_epsilon=1e-5, weight_std_epsilon=1e-8, weight_std_form="sqrt_var",
                   gelu_approximate=False)


def load_fixture(name: str) -> tuple[dict, dict, np.ndarray, np.ndarray]:
  """Returns (fixture spec, state dict as float32 numpy, NHWC float32 images, timm logits)."""
  with np.load(FIXTURES / f"{name}.npz") as data:
    spec = json.loads(str(data["spec"]))
    state = {k[len("param/"):]: data[k].astype(np.float32) for k in data.files if k.startswith("param/")}
    images = data["input_nchw"].astype(np.float32).transpose(0, 2, 3, 1)
    logits = data["logits"]
  return spec, state, images, logits


def model_for(spec: dict, **numerics) -> tuple[str, dict]:
  """The registry name and create_model overrides that build the fixture's architecture."""
  common = dict(image_size=spec["img"], num_classes=spec["classes"], num_groups=spec["groups"])
  resnet = dict(common, resnet_layers=tuple(spec["layers"]), resnet_width_factor=spec["stem"] / 64,
                **numerics)
  if spec["family"] == "bit":
    return "BiT-testing", resnet
  return "R+ViT-testing", dict(
      resnet, hidden_size=spec["embed_dim"], num_layers=spec["depth"], num_heads=spec["num_heads"],
      mlp_dim=int(spec["embed_dim"] * spec["mlp_ratio"]), patch_size=spec["patch_size"])


def our_logits(name: str, state: dict, images: np.ndarray, **overrides) -> np.ndarray:
  params, report = from_torch(name, state, **overrides)
  assert not (report.unused or report.missing or report.initialized), report
  model = create_model(name, **overrides)
  return np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, images))


@pytest.mark.parametrize("fixture", BIT + HYBRID)
def test_logits_match_timm(fixture):
  spec, state, images, expected = load_fixture(fixture)
  name, overrides = model_for(spec, **(TIMM_BIT if spec["family"] == "bit" else TIMM_HYBRID))
  got = our_logits(name, state, images, **overrides)
  assert got.dtype == np.float32 and got.shape == expected.shape
  diff = np.abs(got - expected).max()
  assert diff <= TOLERANCE, f"{fixture}: max |logits diff| {diff:.3g} > {TOLERANCE}"


def test_official_hybrid_numerics_are_close_to_timm_but_distinguishable():
  """The official GroupNorm and standardisation eps (our defaults) move these logits by ~5e-5, more
  than the tolerance: the eps options, not luck, make the match exact."""
  spec, state, images, expected = load_fixture("timm_hybrid_3stage")
  name, overrides = model_for(spec, gelu_approximate=False)
  diff = np.abs(our_logits(name, state, images, **overrides) - expected).max()
  assert TOLERANCE < diff < 5e-3, diff


def test_non_bit_resnet_state_dicts_are_rejected_with_the_reason():
  _, state, _, _ = load_fixture("timm_bit_2stage")
  deep = {**state, "stem.conv1.weight": np.zeros((8, 3, 3, 3), np.float32)}
  with pytest.raises(ValueError, match="deep 3x3 stem"):
    from_torch("BiT-testing", deep, resnet_layers=(2, 1), resnet_width_factor=0.25)
