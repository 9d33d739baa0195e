"""to_torch is from_torch run backwards: timm's own state dicts come back key for key and bit for bit,
and our variables of every timm family survive ours -> timm names -> ours unchanged."""
import flax.traverse_util
import numpy as np
import pytest

from vit_jax import convert
from vit_jax.convert import from_torch_variables, to_torch
from vit_jax.models import create_model

from ..models import test_resnet_timm_parity as resnet_fixtures
from ..models import test_tnt_timm_parity as tnt_fixtures
from ..models import test_vit_timm_parity as vit_fixtures


def fixture_model(fixture: str) -> tuple[str, dict, dict]:
  """(our model name, create_model overrides, timm's float32 state dict) of a timm fixture."""
  if fixture.startswith("timm_vit"):
    kwargs, state, _, _ = vit_fixtures.load_fixture(fixture)
    return "ViT-micro/4", vit_fixtures.overrides_for(kwargs), state
  if fixture.startswith("timm_tnt"):
    kwargs, state, _, _ = tnt_fixtures.load_fixture(fixture)
    return "TNT-test", tnt_fixtures.overrides_for(kwargs), state
  spec, state, _, _ = resnet_fixtures.load_fixture(fixture)
  name, overrides = resnet_fixtures.model_for(spec)
  return name, overrides, state


TIMM_FIXTURES = (*vit_fixtures.NAMES, *resnet_fixtures.BIT, *resnet_fixtures.HYBRID,
                 "timm_tnt_p16", "timm_tnt_p8_s3")


@pytest.mark.parametrize("fixture", TIMM_FIXTURES)
def test_timm_state_dicts_come_back_key_for_key_and_bit_for_bit(fixture):
  """Every key of timm's state dict, and no other: timm's load_state_dict(strict=True) accepts it."""
  name, overrides, state = fixture_model(fixture)
  variables, report = from_torch_variables(name, state, **overrides)
  assert not (report.unused or report.missing or report.initialized), report
  again = to_torch(name, variables, **overrides)
  assert sorted(again) == sorted(state)
  for key, value in state.items():
    assert again[key].shape == value.shape and again[key].dtype == np.float32, key
    np.testing.assert_array_equal(again[key], value, err_msg=key)


def random_variables(name: str, **overrides) -> dict:
  """Every variable of the model (all collections) filled with distinct random values, from shapes only."""
  model = create_model(name, **overrides)
  rng = np.random.default_rng(0)
  return flax.traverse_util.unflatten_dict(
      {path: rng.normal(size=spec.shape).astype(np.float32)
       for path, spec in convert.core.expected_leaves(model).items()}, sep="/")


def assert_trees_equal(a: dict, b: dict) -> None:
  flat_a, flat_b = (flax.traverse_util.flatten_dict(t, sep="/") for t in (a, b))
  assert sorted(flat_a) == sorted(flat_b)
  for path, value in flat_a.items():
    np.testing.assert_array_equal(flat_b[path], value, err_msg=path)


# The timm families' round trip is tests/export/test_timm_safetensors.py (through the file); T2T-ViT
# and LV-ViT go to the official repositories' names, BatchNorm statistics and fixed tables included.
@pytest.mark.parametrize("name,overrides", [("T2T-ViT-test", {}), ("LV-ViT-test", {})],
                         ids=["t2t", "lvvit"])
def test_ours_to_torch_and_back_is_the_identity(name, overrides):
  variables = random_variables(name, **overrides)
  back, report = from_torch_variables(name, to_torch(name, variables, **overrides), **overrides)
  assert not (report.missing or report.initialized), report
  assert_trees_equal(back, variables)


def test_fused_qkv_rows_are_query_key_value_head_by_head():
  variables = random_variables("ViT-micro/4")  # D 32, 2 heads of 16
  attn = variables["params"]["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_0"]
  state = to_torch("ViT-micro/4", variables)
  np.testing.assert_array_equal(state["blocks.1.attn.qkv.weight"][32 + 16 + 3], attn["key"]["kernel"][:, 1, 3])
  np.testing.assert_array_equal(state["blocks.1.attn.qkv.bias"][64 + 19], attn["value"]["bias"][1, 3])
  np.testing.assert_array_equal(state["blocks.1.attn.proj.weight"][:, 19], attn["out"]["kernel"][1, 3])


def test_a_representation_layer_has_no_place_in_timm():
  variables = random_variables("ViT-micro/4", representation_size=8)
  with pytest.raises(ValueError, match=r"no place for: pre_logits/bias, pre_logits/kernel"):
    to_torch("ViT-micro/4", variables, representation_size=8)


def test_variables_of_another_model_are_refused_naming_them():
  variables = random_variables("ViT-micro/4", num_classes=7)
  with pytest.raises(ValueError, match=r"params/head/kernel \(32, 7\): ViT-micro/4 has \(32, 5\)"):
    to_torch("ViT-micro/4", variables, num_classes=5)
  del variables["params"]["head"]
  with pytest.raises(ValueError, match=r"params/head/bias: missing"):
    to_torch("ViT-micro/4", variables, num_classes=5)
