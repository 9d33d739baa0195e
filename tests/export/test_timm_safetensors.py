"""The safetensors export is timm's state dict: our converter reads it back to the same variables, and
families timm lacks are refused by name."""
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from vit_jax.convert import from_torch_variables
from vit_jax.export import timm_safetensors

from . import tiny


@pytest.mark.parametrize("model_name,fields", [
    ("ViT-testing", {}), ("ViT-testing", {"classifier": "gap"}), ("R+ViT-testing", {}),
    ("BiT-testing", {}), ("TNT-test", {})], ids=["vit_token", "vit_gap", "hybrid", "bit", "tnt"])
def test_the_file_converts_back_to_the_same_variables(tmp_path, model_name, fields):
  trained = tiny.trained(model_name, **fields)
  timm_safetensors.save_safetensors(trained, tmp_path / "m.safetensors")
  state = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
  back, report = from_torch_variables(model_name, state, **trained.overrides)
  assert not (report.unused or report.missing or report.initialized), report
  tiny.assert_trees_equal(back, trained.variables)


def test_names_and_layouts_are_timms(tmp_path):
  trained = tiny.trained("ViT-testing")  # D 10, 2 heads, 1 layer, 16 px patches, 10 classes
  timm_safetensors.save_safetensors(trained, tmp_path / "m.safetensors")
  state = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
  params = trained.params
  np.testing.assert_array_equal(state["head.weight"], params["head"]["kernel"].T)
  np.testing.assert_array_equal(state["patch_embed.proj.weight"],
                                params["embedding"]["kernel"].transpose(3, 2, 0, 1))
  assert state["blocks.0.attn.qkv.weight"].shape == (30, 10) and "cls_token" in state
  with safetensors.safe_open(str(tmp_path / "m.safetensors"), "np") as f:
    assert f.metadata() == {"format": "pt", "model_name": "ViT-testing",
                            "timm_class": "timm.models.vision_transformer.VisionTransformer"}


@pytest.mark.parametrize("model_name,family", [("T2T-ViT-test", "T2TViT"), ("LV-ViT-test", "LVViT")])
def test_families_timm_lacks_are_refused(model_name, family):
  with pytest.raises(ValueError, match=f"timm has no {family} .*export it as npz, saved_model or onnx"):
    timm_safetensors.timm_state_dict(tiny.trained(model_name))
