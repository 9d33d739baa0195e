"""load_pretrained: fine-tuning load with head reset, pre_logits drop/keep and posemb resize."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import configuration
from vit_jax.checkpoint import load_pretrained, resize_posemb
from vit_jax.checkpoint.posemb import resize_posemb_1d
from vit_jax.checkpoint.pretrained import INIT_POSEMB_MODES
from vit_jax.export import save_npz

from .tiny import init_params

POSEMB = ("Transformer", "posembed_input", "pos_embedding")


def get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def leaves_by_path(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_finetune_at_higher_resolution_with_new_head(tmp_path):
  _, pretrained = init_params(num_classes=10)  # 16 px, 4x4 grid + cls.
  _, fresh = init_params(seed=1, num_classes=5, image_size=32)  # 8x8 grid + cls.
  save_npz(pretrained, tmp_path / "pre.npz")
  params, report = load_pretrained(fresh, tmp_path / "pre.npz", has_class_token=True,
                                   keep_pre_logits=False)
  posemb, old = get(params, POSEMB), get(pretrained, POSEMB)
  assert old.shape == (1, 17, 32) and posemb.shape == (1, 65, 32)
  np.testing.assert_array_equal(posemb[:, :1], old[:, :1])
  np.testing.assert_array_equal(posemb, resize_posemb(old, 65, True))
  np.testing.assert_array_equal(params["head"]["kernel"], fresh["head"]["kernel"])
  np.testing.assert_array_equal(params["head"]["bias"], fresh["head"]["bias"])
  got, want = leaves_by_path(params), leaves_by_path(pretrained)
  assert set(got) == set(leaves_by_path(fresh))
  for key, value in got.items():
    if "head" not in key and "pos_embedding" not in key:
      assert value.dtype == want[key].dtype
      np.testing.assert_array_equal(value, want[key], err_msg=key)
  assert report.resized == [("Transformer/posembed_input/pos_embedding", (1, 17, 32), (1, 65, 32))]
  assert report.reset == ["head/bias", "head/kernel"]
  assert report.ignored == []
  assert len(report.loaded) == len(got) - 3
  text = report.format()
  assert "resized  Transformer/posembed_input/pos_embedding  (1, 17, 32) -> (1, 65, 32)" in text
  assert "reset    head/kernel" in text
  assert "loaded   Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel" in text


def test_init_posemb_decides_what_a_position_table_becomes_on_a_new_grid():
  _, pretrained = init_params(num_classes=10, image_size=8)  # 2x2 grid + cls.
  _, fresh = init_params(seed=1, num_classes=5, image_size=16)  # 4x4 grid + cls.
  old, key = get(pretrained, POSEMB), "/".join(POSEMB)
  loaded = {mode: load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False,
                                  init_posemb=mode) for mode in INIT_POSEMB_MODES}
  tables = {mode: get(params, POSEMB) for mode, (params, _) in loaded.items()}
  np.testing.assert_array_equal(tables["interpolate_2d"], resize_posemb(old, 17, True))
  np.testing.assert_array_equal(tables["interpolate_1d"], resize_posemb_1d(old, 17, True))
  np.testing.assert_array_equal(tables["reset"], get(fresh, POSEMB))
  assert not np.allclose(tables["interpolate_1d"], tables["interpolate_2d"])
  for table in (tables["interpolate_1d"], tables["interpolate_2d"]):
    np.testing.assert_array_equal(table[:, :1], old[:, :1])  # the class-token row is kept
  for params, _ in loaded.values():  # ... and everything but the head and the table is loaded
    np.testing.assert_array_equal(params["embedding"]["kernel"], pretrained["embedding"]["kernel"])
  reports = {mode: report.format() for mode, (_, report) in loaded.items()}
  assert (f"resized  {key}  (1, 5, 32) -> (1, 17, 32)  (interpolate_2d: the 2x2 grid bilinearly "
          "to 4x4)") in reports["interpolate_2d"]
  assert (f"resized  {key}  (1, 5, 32) -> (1, 17, 32)  (interpolate_1d: 4 rows linearly to 16, "
          "as one sequence, grid ignored)") in reports["interpolate_1d"]
  assert (f"reset    {key}  (fresh init: init_posemb='reset', the checkpoint's (1, 5, 32) not "
          "used)") in reports["reset"]
  assert loaded["reset"][1].resized == [] and key in loaded["reset"][1].reset
  with pytest.raises(ValueError, match="init_posemb='bilinear' is not one of interpolate_2d, "
                                       "interpolate_1d, reset"):
    load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False,
                    init_posemb="bilinear")
  assert configuration.INIT_POSEMB_MODES == INIT_POSEMB_MODES  # the schema checks the same names


def test_result_applies_in_the_new_model():
  _, pretrained = init_params(num_classes=10)
  model, _ = init_params(num_classes=5, image_size=32)
  fresh = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  fresh = nn.unbox(fresh)
  params, _ = load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False)
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((32, 5)))  # Fresh init: zeros.
  logits = jax.jit(model.apply)({"params": params}, jnp.ones((2, 32, 32, 3)))
  assert logits.shape == (2, 5)
  np.testing.assert_array_equal(logits, 0.0)  # Zero head kernel and bias.


def test_gap_model_has_no_class_token_row():
  _, pretrained = init_params(num_classes=10, classifier="gap")
  _, fresh = init_params(seed=1, num_classes=10, classifier="gap", image_size=32)
  params, report = load_pretrained(fresh, pretrained, has_class_token=False, keep_pre_logits=False)
  assert get(params, POSEMB).shape == (1, 64, 32)
  np.testing.assert_array_equal(get(params, POSEMB), resize_posemb(get(pretrained, POSEMB), 64, False))
  assert [key for key, _, _ in report.resized] == ["Transformer/posembed_input/pos_embedding"]


def test_pre_logits_dropped_when_the_new_model_has_none():
  _, pretrained = init_params(num_classes=10, representation_size=32)
  _, fresh = init_params(seed=1, num_classes=5)
  params, report = load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False)
  assert "pre_logits" not in params
  assert report.ignored == ["pre_logits/bias", "pre_logits/kernel"]
  assert "ignored  pre_logits/kernel" in report.format()


def test_pre_logits_kept_when_the_new_model_has_one():
  _, pretrained = init_params(num_classes=10, representation_size=32)
  _, fresh = init_params(seed=1, num_classes=5, representation_size=32)
  params, report = load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=True)
  np.testing.assert_array_equal(params["pre_logits"]["kernel"], pretrained["pre_logits"]["kernel"])
  assert "pre_logits/kernel" in report.loaded
  params, report = load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False)
  np.testing.assert_array_equal(params["pre_logits"]["kernel"], fresh["pre_logits"]["kernel"])
  assert "pre_logits/kernel" in report.reset
  with pytest.raises(ValueError, match="new model has no pre_logits"):
    load_pretrained(init_params(num_classes=5)[1], pretrained, has_class_token=True,
                    keep_pre_logits=True)


@pytest.mark.parametrize("name,overrides,expected", [
    ("ViT-tiny/4", {}, r"Transformer/encoder_norm/bias: checkpoint \(64,\), model \(32,\)"),
    ("ViT-micro/4", {"num_layers": 1},
     r"Transformer/encoderblock_1/LayerNorm_0/bias: checkpoint missing, model \(32,\)"),
    ("ViT-micro/4", {"num_layers": 3},
     r"Transformer/encoderblock_2/\S+: checkpoint \(.*\), model has no such parameter"),
])
def test_another_architecture_is_rejected_naming_params(name, overrides, expected):
  _, pretrained = init_params(name, num_classes=10, **overrides)
  _, fresh = init_params(seed=1, num_classes=5)
  with pytest.raises(ValueError, match=expected) as error:
    load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False)
  assert "another architecture" in str(error.value)


def test_mismatched_class_token_setting_is_a_clear_error():
  _, pretrained = init_params(num_classes=10)
  _, fresh = init_params(seed=1, num_classes=5, image_size=32)
  with pytest.raises(ValueError, match="cannot resize Transformer/posembed_input/pos_embedding"):
    load_pretrained(fresh, pretrained, has_class_token=False, keep_pre_logits=False)


def test_tnt_finetune_at_twice_the_resolution_resizes_the_patch_table():
  """TNT's outer (patch) table follows the image grid, class-token row kept; its inner (pixel) table
  indexes the words inside one patch, which do not change with the image size."""
  _, pretrained = init_params("TNT-test", num_classes=10)  # 32 px: 4x4 patches + cls, 4x4 words.
  model, fresh = init_params("TNT-test", seed=1, num_classes=5, image_size=64)  # 8x8 patches + cls.
  params, report = load_pretrained(fresh, pretrained, has_class_token=model.interface.class_token,
                                   keep_pre_logits=model.interface.representation_layer)
  assert report.resized == [("patch_pos_embedding", (1, 17, 32), (1, 65, 32))]
  assert "pixel_pos_embedding" in report.loaded
  assert report.reset == ["head/bias", "head/kernel"]
  np.testing.assert_array_equal(params["patch_pos_embedding"],
                                resize_posemb(pretrained["patch_pos_embedding"], 65, True))
  np.testing.assert_array_equal(params["pixel_pos_embedding"], pretrained["pixel_pos_embedding"])
  assert "resized  patch_pos_embedding  (1, 17, 32) -> (1, 65, 32)" in report.format()
  logits = jax.jit(model.apply)({"params": params}, jnp.ones((2, 64, 64, 3)))
  assert logits.shape == (2, 5) and np.all(np.isfinite(logits))


def test_grid_only_position_tables_have_no_class_token_row():
  """A pixel table (TNT's words inside a patch) is a bare grid even when the model has a class token."""
  pixel_pos = np.random.default_rng(0).normal(size=(1, 16, 4)).astype(np.float32)
  fresh = {"pixel_pos_embedding": np.zeros((1, 64, 4), np.float32)}
  params, report = load_pretrained(fresh, {"pixel_pos_embedding": pixel_pos}, has_class_token=True,
                                   keep_pre_logits=False)
  np.testing.assert_array_equal(params["pixel_pos_embedding"], resize_posemb(pixel_pos, 64, False))
  assert report.resized == [("pixel_pos_embedding", (1, 16, 4), (1, 64, 4))]


def test_every_classifier_head_is_reset_for_a_new_class_count():
  """LV-ViT has a class head and an auxiliary token head; both must follow the new class count."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax.checkpoint import load_pretrained  # pylint: disable=import-outside-toplevel
  from vit_jax.models import create_model  # pylint: disable=import-outside-toplevel

  def random_params(num_classes):
    model = create_model("LV-ViT-test", num_classes=num_classes)
    size = model.image_size
    shapes = jax.eval_shape(lambda: nn.unbox(model.init(
        jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]))
    rng = np.random.RandomState(num_classes)
    return jax.tree.map(lambda s: rng.randn(*s.shape).astype(np.float32), shapes)

  params, report = load_pretrained(random_params(5), random_params(10), has_class_token=True,
                                   keep_pre_logits=False)
  assert params["aux_head"]["kernel"].shape[-1] == 5 and params["head"]["kernel"].shape[-1] == 5
  assert {"aux_head/kernel", "aux_head/bias", "head/kernel", "head/bias"} <= set(report.reset)


def test_model_state_comes_from_the_pretrained_run_where_it_fits(tmp_path):
  """BatchNorm statistics / fixed tables follow the weights; an npz (params only) keeps them fresh."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax.checkpoint import Checkpointer, load_pretrained_model_state  # pylint: disable=import-outside-toplevel
  from vit_jax.export import save_npz  # pylint: disable=import-outside-toplevel
  from vit_jax.train.state import TrainState  # pylint: disable=import-outside-toplevel

  saved = TrainState(step=jnp.array(1), params={"w": jnp.ones(2)}, opt_state={}, rng=jnp.zeros(2, jnp.uint32),
                     model_state={"batch_stats": {"mean": jnp.full(3, 7.0)}})
  with Checkpointer(tmp_path / "run" / "checkpoints") as ckpt:
    ckpt.save(1, saved, {}, force=True)
  fresh = {"batch_stats": {"mean": np.zeros(3, np.float32)}, "constants": {"w": np.ones(4, np.float32)}}
  state, lines = load_pretrained_model_state(fresh, tmp_path / "run")
  np.testing.assert_array_equal(state["batch_stats"]["mean"], 7.0)
  np.testing.assert_array_equal(state["constants"]["w"], 1.0)
  assert any("loaded   model state 'batch_stats'" in line for line in lines)
  assert any("fresh    model state 'constants'" in line for line in lines)
  save_npz({"w": np.ones(2, np.float32)}, tmp_path / "p.npz")
  state, _ = load_pretrained_model_state(fresh, tmp_path / "p.npz")
  np.testing.assert_array_equal(state["batch_stats"]["mean"], 0.0)


def test_lvvit_finetune_at_twice_the_resolution_resizes_its_position_embeddings():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax.checkpoint import load_pretrained  # pylint: disable=import-outside-toplevel
  from vit_jax.models import create_model  # pylint: disable=import-outside-toplevel

  def random_variables(size):
    model = create_model("LV-ViT-test", image_size=size)
    shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))))
    rng = np.random.RandomState(size)
    # Positive values keep the BatchNorm variances valid.
    return model, jax.tree.map(lambda s: np.abs(rng.randn(*s.shape)).astype(np.float32) * 0.1, shapes)

  _, low = random_variables(32)
  high_model, high = random_variables(64)
  params, report = load_pretrained(high["params"], low["params"], has_class_token=True,
                                   keep_pre_logits=False)
  resized = {key: (old, new) for key, old, new in report.resized}
  (old, new), = resized.values()
  assert old == (1, 17, 32) and new == (1, 65, 32)  # 4x4 -> 8x8 token grid plus the class token
  logits = jax.jit(high_model.apply)({**high, "params": params}, jnp.ones((1, 64, 64, 3)))
  assert logits.shape == (1, 10) and bool(jnp.all(jnp.isfinite(logits)))


def test_fine_tuning_from_masked_patch_prediction_drops_its_mask_embedding_and_colour_head():
  _, pretrained = init_params(num_classes=10, masked_patch_prediction=True)
  _, fresh = init_params(seed=1, num_classes=5, image_size=32)
  params, report = load_pretrained(fresh, pretrained, has_class_token=True, keep_pre_logits=False)
  assert set(params) == set(fresh)
  assert report.ignored == ["mask_embedding", "mpp_head/bias", "mpp_head/kernel"]
  assert report.reset == ["head/bias", "head/kernel"]
  np.testing.assert_array_equal(params["cls"], pretrained["cls"])
  _, fresh_mpp = init_params(seed=1, num_classes=5, masked_patch_prediction=True)
  params, report = load_pretrained(fresh_mpp, pretrained, has_class_token=True,
                                   keep_pre_logits=False)  # continued: both kept
  np.testing.assert_array_equal(params["mask_embedding"], pretrained["mask_embedding"])
  assert report.reset == ["head/bias", "head/kernel"] and report.ignored == []
  plain = {k: v for k, v in pretrained.items() if k not in ("mask_embedding", "mpp_head")}
  params, report = load_pretrained(fresh_mpp, plain, has_class_token=True, keep_pre_logits=False)
  np.testing.assert_array_equal(params["mask_embedding"], fresh_mpp["mask_embedding"])
  assert "mask_embedding" in report.reset and "mpp_head/kernel" in report.reset
