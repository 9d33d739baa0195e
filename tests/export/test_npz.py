"""export: save_npz writes the public vit_jax npz format, the exact inverse of load_npz; the CLI."""
import json
import os
import subprocess
import sys

import numpy as np

from vit_jax.checkpoint import Checkpointer, checkpoint_directory, load_npz
from vit_jax.export import export_npz, save_npz

from ..checkpoint.tiny import assert_trees_equal, flat_public, init_params, make_state


def read_npz(path):
  with np.load(path, allow_pickle=False) as data:
    return {key: data[key] for key in data.files}


def test_save_then_load_is_the_identity(tmp_path):
  _, params = init_params()
  save_npz(params, tmp_path / "p.npz")
  assert_trees_equal(load_npz(tmp_path / "p.npz"), params)


def test_keys_on_disk_use_the_public_pre_linen_names(tmp_path):
  _, params = init_params(representation_size=32)
  save_npz(params, tmp_path / "p.npz")
  keys = set(read_npz(tmp_path / "p.npz"))
  assert keys == set(flat_public(params))
  block = "Transformer/encoderblock_1/"
  assert f"{block}LayerNorm_0/scale" in keys
  assert f"{block}MultiHeadDotProductAttention_1/query/kernel" in keys
  assert f"{block}LayerNorm_2/bias" in keys
  assert f"{block}MlpBlock_3/Dense_1/kernel" in keys
  assert "pre_logits/kernel" in keys and "Transformer/posembed_input/pos_embedding" in keys
  assert not any("MultiHeadDotProductAttention_0" in k or k.startswith("params/") for k in keys)


def test_reexporting_a_public_file_reproduces_it_bit_for_bit(tmp_path):
  _, params = init_params(seed=3)
  original = flat_public(params)
  np.savez(tmp_path / "public.npz", **original)
  save_npz(load_npz(tmp_path / "public.npz"), tmp_path / "again.npz")
  again = read_npz(tmp_path / "again.npz")
  assert sorted(again) == sorted(original)
  for key, value in original.items():
    assert again[key].dtype == value.dtype and again[key].shape == value.shape
    assert again[key].tobytes() == value.tobytes(), key


def test_export_from_a_step_directory(tmp_path):
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(1, make_state(1, seed=1))
    ckpt.save(2, make_state(2, seed=2))
  num_arrays, num_params = export_npz(tmp_path / "ckpt" / "1", tmp_path / "one.npz")
  want = make_state(1, seed=1).params
  assert num_arrays == len(flat_public(want))
  assert num_params == sum(np.size(v) for v in flat_public(want).values())
  assert_trees_equal(load_npz(tmp_path / "one.npz"), want)


def test_cli_exports_the_newest_checkpoint_of_a_workdir(tmp_path):
  state = make_state(5, seed=5)
  with Checkpointer(checkpoint_directory(tmp_path / "run")) as ckpt:
    ckpt.save(5, state, {"data_position": 5})
  output = tmp_path / "exported.npz"
  result = subprocess.run(  # `~` in the path flags is HOME.
      [sys.executable, "-m", "vit_jax.export", "--workdir=~/run", "--output=~/exported.npz"],
      env=dict(os.environ, HOME=str(tmp_path)), capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  num_arrays = len(flat_public(state.params))
  assert f"{num_arrays} arrays" in result.stdout
  assert_trees_equal(load_npz(output), state.params)
  # Without the run's config.json the card knows the size and the code, not the model.
  card = json.loads((tmp_path / "exported.npz.model_card.json").read_text())
  assert card["parameters"] == sum(np.size(v) for v in flat_public(state.params).values())
  assert card["model"] is None and card["export"]["format"] == "npz"
  assert (tmp_path / "exported.npz.model_card.md").exists()
