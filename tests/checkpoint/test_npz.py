"""load_npz reads the public vit_jax npz format (pre-Linen names, (1,1,1,C) GroupNorm) into Linen trees,
and refuses, naming the file and the array, whatever is not a complete archive of finite weights."""
import os

import numpy as np
import pytest

from vit_jax.checkpoint import load_npz, load_pretrained
from vit_jax.checkpoint import naming

from .tiny import assert_trees_equal, flat_public, init_params


def test_reads_public_pre_linen_names(tmp_path):
  _, params = init_params()
  flat = flat_public(params)
  assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in flat
  assert "Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias" in flat
  np.savez(tmp_path / "public.npz", **flat)
  assert_trees_equal(load_npz(tmp_path / "public.npz"), params)


def test_reads_files_already_in_linen_numbering(tmp_path):
  _, params = init_params()
  np.savez(tmp_path / "linen.npz", **naming.flatten(params))
  assert_trees_equal(load_npz(str(tmp_path / "linen.npz")), params)


def test_renumbers_per_type_in_global_order():
  block = {"LayerNorm_0": 0, "MultiHeadDotProductAttention_1": 1, "LayerNorm_2": 2, "MlpBlock_3": 3}
  got = naming.to_linen_names({"Transformer": {"encoderblock_7": block, "encoder_norm": 4}})
  assert got == {"Transformer": {"encoder_norm": 4, "encoderblock_7": {
      "LayerNorm_0": 0, "MultiHeadDotProductAttention_0": 1, "LayerNorm_1": 2, "MlpBlock_0": 3}}}


def test_squeezes_groupnorm_scale_and_bias(tmp_path):
  arrays = {
      "gn_root/scale": np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8),
      "block1/unit1/gn1/bias": np.ones((1, 1, 1, 4), np.float32),
      "block1/unit1/conv1/kernel": np.ones((1, 1, 3, 4), np.float32),  # Not a GroupNorm: untouched.
  }
  np.savez(tmp_path / "hybrid.npz", **arrays)
  got = load_npz(tmp_path / "hybrid.npz")
  np.testing.assert_array_equal(got["gn_root"]["scale"], np.arange(8, dtype=np.float32))
  assert got["block1"]["unit1"]["gn1"]["bias"].shape == (4,)
  assert got["block1"]["unit1"]["conv1"]["kernel"].shape == (1, 1, 3, 4)


def test_missing_or_bad_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no npz checkpoint"):
    load_npz(tmp_path / "absent.npz")
  (tmp_path / "garbage.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="garbage.npz is not a readable npz checkpoint"):
    load_npz(tmp_path / "garbage.npz")


def damaged(tmp_path, kind):
  """A file (or directory) that is not a complete npz archive."""
  valid = tmp_path / "valid.npz"
  np.savez(valid, **naming.flatten(init_params()[1]))
  data, path = valid.read_bytes(), tmp_path / f"{kind}.npz"
  if kind == "directory":
    path.mkdir()
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "truncated":
    path.write_bytes(data[:len(data) // 2])
  elif kind == "random bytes":
    path.write_bytes(np.random.default_rng(0).bytes(4096))
  elif kind == "a bit flipped":
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(flipped))
  elif kind == "single npy":
    np.save(tmp_path / "one.npy", np.ones(3))
    os.rename(tmp_path / "one.npy", path)
  return path


@pytest.mark.parametrize("kind", ["directory", "empty", "truncated", "random bytes", "a bit flipped",
                                  "single npy"])
def test_damaged_files_are_refused_with_their_name(tmp_path, kind):
  path = damaged(tmp_path, kind)
  with pytest.raises(ValueError, match=f"^{path} is not a readable npz checkpoint: ") as error:
    load_npz(path)
  assert str(error.value).count("\n") == 0  # One line, whatever numpy or zipfile said.


def test_pickled_objects_are_refused(tmp_path):
  np.savez(tmp_path / "pickle.npz", weights=np.ones(3), evil=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ValueError, match=r"array 'evil' cannot be read .* pickled Python objects"):
    load_npz(tmp_path / "pickle.npz")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_weights_are_refused_with_their_name(tmp_path, bad_value):
  flat = flat_public(init_params()[1])
  key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
  flat[key] = flat[key].copy()
  flat[key][3, 5] = bad_value
  np.savez(tmp_path / "diverged.npz", **flat)
  with pytest.raises(ValueError, match=rf"diverged.npz: parameter '{key}' holds non-finite values"):
    load_npz(tmp_path / "diverged.npz")


def test_integer_weights_are_refused_not_cast(tmp_path):
  _, params = init_params()
  flat = flat_public(params)
  key = "Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel"
  flat[key] = np.round(flat[key] * 100).astype(np.int32)
  np.savez(tmp_path / "rounded.npz", **flat)
  with pytest.raises(ValueError, match=(
      r"rounded.npz stores 1 floating-point parameter\(s\) as integers:\n"
      r"  Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel: stored as int32, the model's is float32")):
    load_pretrained(params, tmp_path / "rounded.npz", has_class_token=True, keep_pre_logits=False)
