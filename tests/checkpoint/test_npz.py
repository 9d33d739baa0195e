"""load_npz reads the public vit_jax npz format (pre-Linen names, (1,1,1,C) GroupNorm) into Linen trees."""
import numpy as np
import pytest

from vit_jax.checkpoint import load_npz
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
  with pytest.raises(ValueError, match="not a readable npz checkpoint"):
    load_npz(tmp_path / "garbage.npz")
