"""Our LV-ViT computes what the official LV-ViT code computes with the same weights (float32, 1e-5).

The golden fixtures (tests/fixtures/lvvit_tiny_*.npz, see docs/fixtures.md#lvvit) were made by running
the official PyTorch LV_ViT (PyPI tlt 0.2.0) in eval mode with perturbed weights and BatchNorm statistics:
LV_ViT(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=3., p_emb=..., skip_lam=...,
return_dense=True, mix_token=True, num_classes=10). This test needs no torch.
"""
import functools
import pathlib

import numpy as np
import pytest

from vit_jax.convert import from_torch_variables
from vit_jax.models import create_model

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
TOLERANCE = 1e-5
# fixture -> the official p_emb / skip_lam it was built with, as our overrides.
CASES = {
    "lvvit_tiny_4_2": dict(stem_channels=64, skip_lam=2.0),
    "lvvit_tiny_4_2_128": dict(stem_channels=128, skip_lam=3.0),
}
TINY = dict(image_size=64, patch_size=16, hidden_size=64, num_layers=2, num_heads=2, mlp_dim=192,
            num_classes=10)


def load(name):
  """Returns (overrides, official state dict, NHWC images, official outputs)."""
  with np.load(FIXTURES / f"{name}.npz") as data:
    state = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
    outputs = {k[len("out/"):]: data[k] for k in data.files if k.startswith("out/")}
    images = data["input_nchw"].transpose(0, 2, 3, 1)
  return {**TINY, **CASES[name]}, state, images, outputs


@functools.lru_cache(maxsize=None)
def convert(name):
  """Returns (overrides, our variables, NHWC images, official outputs); converted once per fixture."""
  overrides, state, images, outputs = load(name)
  variables, report = from_torch_variables("LV-ViT-S", state, **overrides)
  assert not (report.missing or report.initialized), report
  assert all(key.endswith("num_batches_tracked") for key in report.unused), report
  return overrides, variables, images, outputs


def assert_close(got, expected, what):
  got = np.asarray(got)
  assert got.dtype == np.float32 and got.shape == expected.shape, (what, got.shape, expected.shape)
  diff = np.abs(got - expected).max()
  assert diff <= TOLERANCE, f"{what}: max |diff| {diff:.3g} > {TOLERANCE}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_eval_logits_match_official(name):
  """x_cls + 0.5 * max over tokens of x_aux: the official eval output."""
  overrides, variables, images, outputs = convert(name)
  logits = create_model("LV-ViT-S", **overrides).apply(variables, images, train=False)
  assert_close(logits, outputs["eval_logits"], f"{name} eval_logits")


@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_outputs_match_official(name):
  overrides, variables, images, outputs = convert(name)
  dense = create_model("LV-ViT-S", return_dense=True, **overrides).apply(variables, images)
  assert_close(dense.cls_logits, outputs["x_cls"], f"{name} x_cls")
  assert_close(dense.token_logits, outputs["x_aux"], f"{name} x_aux")
  np.testing.assert_array_equal(dense.mix_box, 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_final_features_match_official(name):
  """All tokens after the final LayerNorm (sown as intermediates/encoded); num_classes=0 gives the
  class token's."""
  overrides, variables, images, outputs = convert(name)
  _, state = create_model("LV-ViT-S", **overrides).apply(variables, images,
                                                         mutable=["intermediates"])
  (features,) = state["intermediates"]["encoded"]
  assert_close(features, outputs["features"], f"{name} features")
  params = {k: v for k, v in variables["params"].items() if k not in ("head", "aux_head")}
  pooled = create_model("LV-ViT-S", **{**overrides, "num_classes": 0}).apply(
      {"params": params, "batch_stats": variables["batch_stats"]}, images)
  assert_close(pooled, outputs["features"][:, 0], f"{name} class-token feature")


def test_fixture_sees_the_batchnorm_running_statistics():
  """Replacing the loaded statistics by fresh ones (mean 0, var 1) breaks parity by far."""
  overrides, variables, images, outputs = convert("lvvit_tiny_4_2")
  fresh = {"params": variables["params"], "batch_stats": {"stem": {
      bn: {"mean": np.zeros_like(s["mean"]), "var": np.ones_like(s["var"])}
      for bn, s in variables["batch_stats"]["stem"].items()}}}
  logits = create_model("LV-ViT-S", **overrides).apply(fresh, images)
  assert np.abs(logits - outputs["eval_logits"]).max() > 100 * TOLERANCE


def test_fixture_sees_the_residual_scale():
  overrides, variables, images, outputs = convert("lvvit_tiny_4_2")
  logits = create_model("LV-ViT-S", **{**overrides, "skip_lam": 1.0}).apply(variables, images)
  assert np.abs(logits - outputs["eval_logits"]).max() > 100 * TOLERANCE


def test_qkv_bias_in_the_state_dict_is_an_error():
  overrides, state, _, _ = load("lvvit_tiny_4_2")
  state["blocks.0.attn.qkv.bias"] = np.zeros((192,), np.float32)
  with pytest.raises(ValueError, match="q/k/v biases"):
    from_torch_variables("LV-ViT-S", state, **overrides)


def test_checkpoint_without_aux_head_is_an_error():
  overrides, state, _, _ = load("lvvit_tiny_4_2")
  del state["aux_head.weight"], state["aux_head.bias"]
  with pytest.raises(ValueError, match="no aux_head"):
    from_torch_variables("LV-ViT-S", state, **overrides)
