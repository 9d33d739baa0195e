"""Our T2T-ViT computes what the official PyTorch code computes, given the same weights (float32, 1e-5).

The fixtures tests/fixtures/t2t_tiny_*.npz were generated from the unmodified official code
(yitu-opensource/T2T-ViT @0f63dc9, models/t2t_vit.py, torch 2.14.1, eval mode) with
`T2T_ViT(img_size=64, tokens_type=..., embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.,
num_classes=10)`, trainable weights perturbed by N(0, 0.02); the `_qkscale_dim` files add
qk_scale=64**-0.5 (the setting of the released checkpoints). Keys: param/<official state_dict key>,
input_nchw, out/logits, out/cls_feature (final-LayerNorm class token), out/t2t_tokens (tokenizer
output, before cls and positions).
"""
import pathlib

import jax
import numpy as np
import pytest

from vit_jax.convert import from_torch, from_torch_variables
from vit_jax.models import create_model
from vit_jax.models.t2t import sinusoid_table

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
TOLERANCE = 1e-5
# fixture -> (tokens_type, attention_scale)
CASES = {
    "t2t_tiny_performer": ("performer", "head_dim"),
    "t2t_tiny_performer_qkscale_dim": ("performer", "embed_dim"),
    "t2t_tiny_transformer": ("transformer", "head_dim"),
    "t2t_tiny_transformer_qkscale_dim": ("transformer", "embed_dim"),
}


def load_fixture(name: str) -> tuple[dict, np.ndarray, dict]:
  """Returns (official state dict, NHWC images, official outputs)."""
  with np.load(FIXTURES / f"{name}.npz") as data:
    state = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
    images = data["input_nchw"].transpose(0, 2, 3, 1)
    outputs = {k[len("out/"):]: data[k] for k in data.files if k.startswith("out/")}
  return state, images, outputs


def official_overrides(tokens_type: str, attention_scale: str) -> dict:
  """create_model overrides for the fixtures' official constructor arguments."""
  return dict(image_size=64, num_classes=10, hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128,
              token_dim=64, tokens_type=tokens_type, attention_scale=attention_scale)


def our_outputs(state: dict, images: np.ndarray, **overrides) -> dict:
  """Converts the state dict and returns our logits, class feature and tokenizer output.

  The Performer's `w` lives in the 'constants' collection, so it needs from_torch_variables; the
  transformer T2T model has parameters only and goes through the plain from_torch.
  """
  if overrides["tokens_type"] == "performer":
    variables, report = from_torch_variables("T2T-ViT-test", state, **overrides)
  else:
    params, report = from_torch("T2T-ViT-test", state, **overrides)
    variables = {"params": params}
  # pos_embed is the fixed sinusoid table, which we compute (checked below) instead of loading.
  assert report.unused == ("pos_embed",) and not (report.missing or report.initialized), report
  model = create_model("T2T-ViT-test", **overrides)
  capture = lambda module, method: method == "__call__" and module.name in (
      "tokens_to_token", "Transformer")
  logits, captured = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=capture))(
      variables, images)
  captured = captured["intermediates"]
  return {"logits": np.asarray(logits),
          "cls_feature": np.asarray(captured["Transformer"]["__call__"][0][:, 0]),
          "t2t_tokens": np.asarray(captured["tokens_to_token"]["__call__"][0])}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_features_and_tokens_match_the_official_code(name):
  state, images, expected = load_fixture(name)
  got = our_outputs(state, images, **official_overrides(*CASES[name]))
  for key in ("logits", "cls_feature", "t2t_tokens"):
    assert got[key].dtype == np.float32 and got[key].shape == expected[key].shape, key
    diff = np.abs(got[key] - expected[key]).max()
    assert diff <= TOLERANCE, f"{name}: max |{key} diff| {diff:.3g} > {TOLERANCE}"


def test_our_sinusoid_table_is_the_official_one():
  state, _, _ = load_fixture("t2t_tiny_performer")
  np.testing.assert_array_equal(sinusoid_table(17, 64), state["pos_embed"])


def test_released_checkpoint_scale_is_needed_to_match():
  """The fixtures are sharp enough to tell the two backbone attention scales apart."""
  state, images, expected = load_fixture("t2t_tiny_performer_qkscale_dim")
  got = our_outputs(state, images, **official_overrides("performer", "head_dim"))
  assert np.abs(got["logits"] - expected["logits"]).max() > 10 * TOLERANCE


def test_performer_matrices_land_in_the_constants_collection():
  state, _, _ = load_fixture("t2t_tiny_performer")
  overrides = official_overrides("performer", "head_dim")
  variables, _ = from_torch_variables("T2T-ViT-test", state, **overrides)
  assert set(variables) == {"params", "constants"}
  for i in (1, 2):
    np.testing.assert_array_equal(variables["constants"]["tokens_to_token"][f"attention{i}"]["w"],
                                  state[f"tokens_to_token.attention{i}.w"])


def test_from_torch_points_the_performer_to_from_torch_variables():
  state, _, _ = load_fixture("t2t_tiny_performer")
  with pytest.raises(ValueError, match="from_torch_variables"):
    from_torch("T2T-ViT-test", state, **official_overrides("performer", "head_dim"))


def test_a_state_dict_of_the_other_t2t_type_is_a_clear_error():
  state, _, _ = load_fixture("t2t_tiny_transformer")
  with pytest.raises(ValueError, match="transformer T2T module.*tokens_type='transformer'"):
    from_torch_variables("T2T-ViT-test", state, **official_overrides("performer", "head_dim"))
