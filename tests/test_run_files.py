"""Specification of the files a run leaves for later commands: its workdir is found from any
checkpoint path inside it, its class names are read back as written, and a names file that does not
fit the model is refused naming both counts."""
import json

import pytest

from vit_jax import run_files


@pytest.fixture
def workdir(tmp_path):
  (tmp_path / "checkpoints" / "200").mkdir(parents=True)
  (tmp_path / run_files.CONFIG_FILE).write_text(json.dumps(
      {"model_name": "ViT-micro/4", "data": {"image_size": 16}, "optim": {"lr_mults": ["head/.*=10"]}}))
  return tmp_path


def test_the_workdir_is_found_from_itself_its_checkpoints_and_a_step_but_not_from_an_npz(workdir):
  for path in (workdir, workdir / "checkpoints", workdir / "checkpoints" / "200"):
    assert run_files.find_workdir(str(path)) == str(workdir)
  assert run_files.find_workdir(str(workdir / "vit.npz")) is None
  config = run_files.read_config(str(workdir))
  assert config.data.image_size == 16 and config.optim.lr_mults == ("head/.*=10",)  # a tuple again


def test_class_names_are_read_back_as_written_and_default_to_the_ids(workdir, tmp_path):
  run_files.write_class_names(str(workdir), ["cat", "dog", 7])
  step = str(workdir / "checkpoints" / "200")
  assert run_files.class_names_of(step, 3) == (["cat", "dog", "7"],
                                               str(workdir / run_files.CLASS_NAMES_FILE))
  names, where = run_files.class_names_of(str(tmp_path / "elsewhere.npz"), 2)
  assert names == ["0", "1"] and where.startswith("class ids")
  text = tmp_path / "names.txt"
  text.write_text("ant\nbee\n\n")
  assert run_files.class_names_of(step, 2, str(text)) == (["ant", "bee"], str(text))
  mapping = tmp_path / "names.json"
  mapping.write_text(json.dumps({"1": "bee", "0": "ant"}))
  assert run_files.read_class_names(str(mapping), 2) == ["ant", "bee"]


def test_names_for_another_number_of_classes_are_refused_naming_both_counts(workdir):
  run_files.write_class_names(str(workdir), ["cat", "dog"])
  with pytest.raises(ValueError, match=r"class_names.json holds 2 class names, but the model has 10 "
                                       r"classes"):
    run_files.class_names_of(str(workdir), 10)
