"""The safetensors export is timm's state dict: our converter reads it back to the same variables, and
families timm lacks are refused by name."""
import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from vit_jax.convert import from_torch_variables
from vit_jax.export import timm_kernels, timm_safetensors
from vit_jax.models import create_model

from . import tiny


# timm's own numerics for the hybrid: its weight standardization form, so no kernel is rewritten.
HYBRID_TIMM_FORM = {"weight_std_form": "sqrt_var", "weight_std_epsilon": 1e-8}


@pytest.mark.parametrize("model_name,fields", [
    ("ViT-testing", {}), ("ViT-testing", {"classifier": "gap"}), ("R+ViT-testing", HYBRID_TIMM_FORM),
    ("BiT-testing", {}), ("TNT-test", {})], ids=["vit_token", "vit_gap", "hybrid", "bit", "tnt"])
def test_the_file_converts_back_to_the_same_variables(tmp_path, model_name, fields):
  trained = tiny.trained(model_name, **fields)
  timm_safetensors.save_safetensors(trained, tmp_path / "m.safetensors")
  state = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
  back, report = from_torch_variables(model_name, state, **trained.overrides)
  assert not (report.unused or report.missing or report.initialized), report
  tiny.assert_trees_equal(back, trained.variables)


def test_an_official_hybrid_is_written_for_timms_weight_standardization(tmp_path):
  """Our hybrids divide by std + 1e-5, timm's StdConv2dSame by sqrt(var + 1e-8): the file's backbone
  kernels are rewritten so that timm's form, which our model also computes with
  weight_std_form='sqrt_var', gives the official model's logits."""
  trained = tiny.trained("R+ViT-testing")
  assert trained.model.weight_std_form == "std"
  timm_safetensors.save_safetensors(trained, tmp_path / "m.safetensors")
  state = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
  with safetensors.safe_open(str(tmp_path / "m.safetensors"), "np") as f:
    assert "StdConv2dSame(eps=1e-08)" in f.metadata()["backbone_kernels"]
  as_timm = dict(trained.overrides, **HYBRID_TIMM_FORM)
  variables, _ = from_torch_variables("R+ViT-testing", state, **as_timm)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)

  def logits(model, v):
    return np.asarray(jax.jit(lambda x: model.apply(v, x, train=False))(images))
  ours = logits(trained.model, trained.variables)
  theirs = logits(create_model("R+ViT-testing", **as_timm), variables)
  # Unrewritten kernels under timm's form differ by ~2e-4 here (docs/export.md#timm); rewritten, ~1e-6.
  np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
  assert np.abs(ours).max() > 0.5
  assert "eps=1e-08" in timm_safetensors.timm_numerics(trained.model)


def test_the_rewritten_kernel_standardizes_to_the_official_one():
  kernel = np.random.default_rng(1).normal(0.3, 0.05, (8, 3, 7, 7)).astype(np.float32)
  centred = kernel.astype(np.float64)
  centred -= centred.mean(axis=(1, 2, 3), keepdims=True)
  official = centred / (centred.std(axis=(1, 2, 3), keepdims=True) + 1e-5)
  rewritten = timm_kernels.for_timm_form(kernel, 1e-5).astype(np.float64)
  timm_form = rewritten - rewritten.mean(axis=(1, 2, 3), keepdims=True)
  timm_form /= np.sqrt(timm_form.var(axis=(1, 2, 3), keepdims=True) + 1e-8)
  np.testing.assert_allclose(timm_form, official, rtol=0, atol=5e-7)  # float32 storage
  plain = centred / np.sqrt(centred.var(axis=(1, 2, 3), keepdims=True) + 1e-8)
  assert np.abs(plain - official).max() > 1e-4  # what the rewrite is for


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
