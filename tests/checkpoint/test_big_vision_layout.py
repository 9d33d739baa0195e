"""big_vision's ViT checkpoints load as ours: the position table moves from the top level into
Transformer/posembed_input with a zero class-token row (big_vision prepends the class token after
adding positions), scanned files unroll, a file without a table (posemb='sincos2d') gets big_vision's
fixed table computed for the new model's grid, and an attention-pooling head is refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.checkpoint import big_vision_layout, load_npz, load_pretrained, naming
from vit_jax.checkpoint.layers_layout import stack_layers
from vit_jax.models import create_model

from ..models.tiny import random_variables


def ours(classifier="token", image_size=16):
  model = create_model("ViT-micro/4", num_classes=10, image_size=image_size, classifier=classifier)
  params = jax.tree.map(np.asarray, random_variables(model)["params"])
  if classifier == "token":  # the function a big_vision file can hold: no position for [cls]
    params["Transformer"]["posembed_input"]["pos_embedding"][:, 0] = 0.0
  return params


def as_big_vision(params, *, scanned=False, sincos=False):
  """Our params in big_vision's layout: the table at the top level without the class-token row."""
  tree = {key: value for key, value in params.items()}
  transformer = dict(tree["Transformer"])
  table = transformer.pop("posembed_input")["pos_embedding"]
  tree["Transformer"] = stack_layers(transformer) if scanned else transformer
  if not sincos:
    tree["pos_embedding"] = table[:, 1:] if "cls" in tree else table
  return tree


def save(tree, path):
  np.savez(path, **naming.flatten(tree))
  return path


@pytest.mark.parametrize("classifier", ["token", "gap"])
@pytest.mark.parametrize("scanned", [False, True], ids=["unrolled", "scanned"])
def test_a_big_vision_file_loads_as_our_tree(tmp_path, classifier, scanned):
  params = ours(classifier)
  loaded = load_npz(save(as_big_vision(params, scanned=scanned), tmp_path / "bv.npz"))
  if scanned:
    loaded = load_pretrained(params, loaded, has_class_token=classifier == "token",
                             keep_pre_logits=False)[0]
    loaded["head"] = params["head"]  # the fine-tuning load resets the head; all else is the file's
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_fine_tuning_at_a_higher_resolution_resizes_the_moved_table(tmp_path):
  path = save(as_big_vision(ours()), tmp_path / "bv.npz")
  init = ours(image_size=32)
  params, report = load_pretrained(init, str(path), has_class_token=True, keep_pre_logits=False)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 65, 32)
  assert [key for key, _, _ in report.resized] == ["Transformer/posembed_input/pos_embedding"]


def big_vision_sincos(h, w, width):
  """The table as big_vision writes it (mgrid, einsum), for comparison."""
  y, x = jnp.mgrid[:h, :w]
  omega = 1.0 / 10_000.0 ** (jnp.arange(width // 4) / (width // 4 - 1))
  y, x = jnp.einsum("m,d->md", y.flatten(), omega), jnp.einsum("m,d->md", x.flatten(), omega)
  return np.asarray(jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1))


@pytest.mark.parametrize("classifier,image_size", [("gap", 16), ("token", 32)])
def test_a_file_without_a_table_gets_the_sincos_table_of_the_new_grid(tmp_path, classifier, image_size):
  path = save(as_big_vision(ours(classifier), sincos=True), tmp_path / "bv.npz")
  init = ours(classifier, image_size)
  params, report = load_pretrained(init, str(path), has_class_token=classifier == "token",
                                   keep_pre_logits=False)
  table = params["Transformer"]["posembed_input"]["pos_embedding"][0]
  grid = image_size // 4
  patches = table[1:] if classifier == "token" else table
  np.testing.assert_allclose(patches, big_vision_sincos(grid, grid, 32), atol=1e-6)
  if classifier == "token":
    np.testing.assert_array_equal(table[0], 0.0)
  assert "sin-cos" in report.format()


def test_an_attention_pooling_head_is_refused(tmp_path):
  tree = as_big_vision(ours("gap"))
  tree["MAPHead_0"] = {"probe": np.zeros((1, 1, 32), np.float32)}
  with pytest.raises(ValueError, match=r"bv.npz is a big_vision ViT with an attention-pooling head "
                                       r"\(pool_type='map', MAPHead_0\)"):
    load_npz(save(tree, tmp_path / "bv.npz"))


def test_our_own_files_are_not_taken_for_big_vision_ones():
  assert not big_vision_layout.is_big_vision(ours())
  assert not big_vision_layout.is_big_vision({"root_block": {}, "head": {}})  # BiT
