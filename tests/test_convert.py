"""from_torch maps timm state dicts onto our parameter trees exactly and names whatever does not fit."""
import ast
import pathlib

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import convert
from vit_jax.models import create_model, registry
from vit_jax.models.t2t import sinusoid_table

MICRO = dict(num_classes=5, gelu_approximate=False)  # ViT-micro/4: 16 px, patch 4, D 32, 2 heads, 2 layers


def init_params(**overrides) -> dict:
  """Random (not default-init) params so that every layout error shows up as a value difference."""
  model = create_model("ViT-micro/4", **overrides)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))["params"]
  flat = flax.traverse_util.flatten_dict(params)
  rng = np.random.default_rng(0)
  return flax.traverse_util.unflatten_dict(
      {k: rng.normal(size=v.shape).astype(np.float32) for k, v in flat.items()})


def to_timm(params: dict) -> dict[str, np.ndarray]:
  """Our params under timm names (docs/architectures.md#vit-timm-mapping), written independently of
  convert.py."""
  def linear(p):
    return {"weight": p["kernel"].T, "bias": p["bias"]}

  def norm(p):
    return {"weight": p["scale"], "bias": p["bias"]}

  tree = {"patch_embed.proj.weight": params["embedding"]["kernel"].transpose(3, 2, 0, 1),
          "patch_embed.proj.bias": params["embedding"]["bias"],
          "pos_embed": params["Transformer"]["posembed_input"]["pos_embedding"]}
  if "cls" in params:
    tree["cls_token"] = params["cls"]
  blocks = sorted(k for k in params["Transformer"] if k.startswith("encoderblock_"))
  for name in blocks:
    block, prefix = params["Transformer"][name], f"blocks.{name.split('_')[1]}"
    attn = block["MultiHeadDotProductAttention_0"]
    dim = attn["query"]["kernel"].shape[0]
    parts = {
        "norm1": norm(block["LayerNorm_0"]), "norm2": norm(block["LayerNorm_1"]),
        "attn.qkv": {"weight": np.concatenate(
                         [attn[n]["kernel"].reshape(dim, -1).T for n in ("query", "key", "value")]),
                     "bias": np.concatenate(
                         [attn[n]["bias"].reshape(-1) for n in ("query", "key", "value")])},
        "attn.proj": {"weight": attn["out"]["kernel"].reshape(-1, dim).T, "bias": attn["out"]["bias"]},
        "mlp.fc1": linear(block["MlpBlock_0"]["Dense_0"]),
        "mlp.fc2": linear(block["MlpBlock_0"]["Dense_1"])}
    tree.update({f"{prefix}.{m}.{w}": v for m, p in parts.items() for w, v in p.items()})
  tree.update({f"norm.{k}": v for k, v in norm(params["Transformer"]["encoder_norm"]).items()})
  if "head" in params:
    tree.update({f"head.{k}": v for k, v in linear(params["head"]).items()})
  return tree


def assert_trees_equal(a: dict, b: dict) -> None:
  flat_a, flat_b = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    assert flat_a[key].shape == flat_b[key].shape, key
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=str(key))


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_round_trip_restores_every_leaf(classifier):
  params = init_params(classifier=classifier, **MICRO)
  converted, report = convert.from_torch("ViT-micro/4", to_timm(params), classifier=classifier, **MICRO)
  assert_trees_equal(converted, params)
  assert report == convert.ConversionReport(unused=(), missing=(), initialized=())
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32
             for v in jax.tree.leaves(converted))


def test_attention_layout():
  """A fused qkv row h*hd + j is head h, channel j; proj column h*hd + j likewise."""
  params = init_params(**MICRO)
  state = to_timm(params)
  converted, _ = convert.from_torch("ViT-micro/4", state, **MICRO)
  attn = converted["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_0"]
  qkv, proj = state["blocks.1.attn.qkv.weight"], state["blocks.1.attn.proj.weight"]
  assert attn["key"]["kernel"].shape == (32, 2, 16)
  np.testing.assert_array_equal(attn["key"]["kernel"][:, 1, 3], qkv[32 + 16 + 3])
  np.testing.assert_array_equal(attn["value"]["bias"][1, 3], state["blocks.1.attn.qkv.bias"][64 + 19])
  np.testing.assert_array_equal(attn["out"]["kernel"][1, 3], proj[:, 19])


def test_report_lists_unused_keys():
  state = to_timm(init_params(**MICRO))
  state["head_dist.weight"] = np.zeros((5, 32), np.float32)
  _, report = convert.from_torch("ViT-micro/4", state, **MICRO)
  assert report.unused == ("head_dist.weight",)
  headless, report = convert.from_torch("ViT-micro/4", state, num_classes=None)
  assert "head" not in headless
  assert report.unused == ("head.bias", "head.weight", "head_dist.weight")


def test_missing_keys_raise_unless_allowed():
  state = to_timm(init_params(**MICRO))
  del state["head.weight"], state["blocks.0.attn.qkv.bias"]
  with pytest.raises(ValueError, match=r"missing: head\.weight \(for head/kernel\)") as error:
    convert.from_torch("ViT-micro/4", state, **MICRO)
  assert "blocks.0.attn.qkv.bias" in str(error.value) and "allow_missing=True" in str(error.value)
  params, report = convert.from_torch("ViT-micro/4", state, allow_missing=True, **MICRO)
  assert report.missing == ("blocks.0.attn.qkv.bias", "head.weight")
  assert set(report.initialized) == {
      "head/kernel", *(f"Transformer/encoderblock_0/MultiHeadDotProductAttention_0/{n}/bias"
                       for n in ("query", "key", "value"))}
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((32, 5)))  # the official head init


def test_pre_logits_has_no_timm_counterpart():
  state = to_timm(init_params(**MICRO))
  del state["head.weight"], state["head.bias"]  # a pre-training head: timm has no pre_logits to carry
  with pytest.raises(ValueError, match=r"<no timm counterpart> \(for pre_logits/kernel\)"):
    convert.from_torch("ViT-micro/4", state, representation_size=8, **MICRO)
  params, report = convert.from_torch(
      "ViT-micro/4", state, allow_missing=True, representation_size=8, **MICRO)
  assert params["pre_logits"]["kernel"].shape == (32, 8)
  assert report.missing == ("head.bias", "head.weight", "<no timm counterpart>")


def test_shape_mismatches_name_every_key():
  state = to_timm(init_params(**MICRO))
  with pytest.raises(ValueError) as error:
    convert.from_torch("ViT-micro/4", state, num_classes=7, image_size=32)
  message = str(error.value)
  assert "head.weight (5, 32) -> head/kernel: model expects (32, 7)" in message
  assert "pos_embed (1, 17, 32) -> Transformer/posembed_input/pos_embedding" in message
  assert "image size" in message and "num_classes" in message


def test_state_dict_of_another_width_is_rejected_by_name():
  wide = to_timm(init_params(hidden_size=48, num_heads=3, **MICRO))
  with pytest.raises(ValueError) as error:
    convert.from_torch("ViT-micro/4", wide, **MICRO)
  assert "blocks.0.attn.qkv.weight (144, 48) -> " in str(error.value)
  assert "patch_embed.proj.weight (48, 3, 4, 4) -> embedding/kernel" in str(error.value)


def test_token_model_needs_the_class_token():
  state = to_timm(init_params(**MICRO))
  del state["cls_token"]
  with pytest.raises(ValueError, match=r"missing: cls_token \(for cls\)"):
    convert.from_torch("ViT-micro/4", state, **MICRO)


@pytest.mark.parametrize("key,feature", [
    ("fc_norm.weight", "fc_norm=False"),
    ("blocks.0.ls1.gamma", "LayerScale"),
    ("norm_pre.weight", "pre_norm"),
    ("reg_token", "register tokens"),
    ("blocks.1.attn.q_norm.weight", "qk_norm"),
])
def test_timm_features_we_lack_are_errors(key, feature):
  state = to_timm(init_params(**MICRO))
  state[key] = np.ones((32,), np.float32)
  with pytest.raises(ValueError, match=feature):
    convert.from_torch("ViT-micro/4", state, **MICRO)


@pytest.mark.parametrize("path", sorted(pathlib.Path(convert.__file__).parent.glob("*.py")),
                         ids=lambda path: path.name)
def test_converter_does_not_import_torch(path):
  tree = ast.parse(path.read_text())
  imported = {alias.name.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, (ast.Import, ast.ImportFrom))
              for alias in getattr(node, "names", [])}
  imported |= {node.module.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module}
  assert "torch" not in imported and "timm" not in imported


def test_every_model_family_has_one_converter():
  assert set(convert.core.CONVERTERS) == set(registry.FAMILIES)


def test_t2t_checkpoints_must_hold_the_sinusoid_table_the_model_computes():
  """T2TViT never loads `pos_embed`: it recomputes the table, so a checkpoint with another table would
  silently become another function. Any number of positions passes (a new resolution recomputes it)."""
  for table in (sinusoid_table(5, 32), sinusoid_table(197, 32), sinusoid_table(5, 32) + 1e-7):
    with pytest.raises(ValueError) as error:  # the check passes; the weights are missing
      convert.from_torch_variables("T2T-ViT-test", {"pos_embed": table})
    assert "missing: " in str(error.value) and "sinusoid" not in str(error.value)
  learned = sinusoid_table(5, 32)
  learned[0, 3, 7] += 1e-3
  with pytest.raises(ValueError, match=r"pos_embed \(1, 5, 32\) is not the fixed sinusoid table "
                                       r"T2TViT computes \(max difference 0\.001 > 1e-06\)"):
    convert.from_torch_variables("T2T-ViT-test", {"pos_embed": learned})
