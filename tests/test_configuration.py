"""Specification of configs: locked keys, durations in steps/epochs/examples, the shipped config files."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from vit_jax import paths
from vit_jax.configuration import (ConfigError, base_config, check_values, expand_paths,
                                  model_overrides, total_steps)

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config_file(name, arg):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_unknown_key_in_a_locked_config_is_an_error_naming_it():
  config = base_config().lock()
  with pytest.raises(AttributeError, match="bath_size"):
    config.bath_size = 3
  with pytest.raises(AttributeError, match="lerning_rate"):
    config.optim.lerning_rate = 0.1


def test_durations_in_steps_epochs_or_examples():
  config = base_config()
  config.batch_size = 100
  config.train.steps = 7
  assert total_steps(config, 1000) == 7
  config.train.steps, config.train.epochs = 0, 2.5
  assert total_steps(config, 1000) == 25
  config.train.epochs, config.train.examples = 0.0, 1050
  assert total_steps(config, 1000) == 11


def test_exactly_one_duration_must_be_set():
  config = base_config()
  with pytest.raises(ValueError, match="exactly one of"):
    total_steps(config, 1000)
  config.train.steps, config.train.epochs = 5, 1.0
  with pytest.raises(ValueError, match="exactly one of"):
    total_steps(config, 1000)


def test_model_overrides_are_only_the_fields_set():
  config = base_config("ViT-B/16")
  assert model_overrides(config) == {}
  config.model.hidden_size = 64
  config.model.gelu_approximate = False
  assert model_overrides(config) == {"hidden_size": 64, "gelu_approximate": False}


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_default_job_configs_are_locked_and_complete(stage):
  config = load_config_file("default", stage)
  assert config.is_locked
  assert config.data.source == "digits"
  assert total_steps(config, 1437) > 0


def test_default_finetune_doubles_the_resolution():
  assert (load_config_file("default", "finetune").data.image_size
          == 2 * load_config_file("default", "pretrain").data.image_size)


CONFIG_ARGS = [("default", "pretrain"), ("default", "finetune"), ("bit", "R50x1"), ("bit", "test"),
               ("hybrid", "R50+B/16"), ("hybrid", "test"), ("tnt", "tnt_s"), ("tnt", "test"),
               ("t2t", "t2t_vit_14"), ("t2t", "test"), ("lvvit", "lvvit_s"), ("lvvit", "test"),
               ("lvvit", "digits_token_label"), ("noisy_student", "teacher"),
               ("noisy_student", "student"), ("vit_pretrain", "jft:H/14"),
               ("vit_pretrain", "augreg_i21k:B/16"), ("vit_finetune", "cifar10:B/16"),
               ("vit_finetune", "vtab/smallnorb_azimuth:B/16")]


def test_every_config_loads_without_jax_or_tensorflow():
  """A host parses its config before anything else: the schema and config files import neither."""
  loads = "\n".join(f"load({name!r}, {arg!r})" for name, arg in CONFIG_ARGS)
  code = (
      "import importlib.util, sys\n"
      "def load(name, arg):\n"
      f"  spec = importlib.util.spec_from_file_location(name, {str(CONFIGS)!r} + '/' + name + '.py')\n"
      "  module = importlib.util.module_from_spec(spec)\n"
      "  spec.loader.exec_module(module)\n"
      "  assert module.get_config(arg).is_locked\n"
      f"{loads}\n"
      "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'jaxlib', 'flax', 'optax', "
      "'tensorflow', 'tensorflow_datasets'}))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name, arg", CONFIG_ARGS)
def test_every_config_sets_only_fields_of_its_model_family(name, arg):
  config = load_config_file(name, arg)
  assert set(config.model) <= set(base_config(config.model_name).model)
  assert config.evals.test.type == "classification"


def test_family_configs_expose_their_family_fields():
  assert "skip_lam" in load_config_file("lvvit", "lvvit_s").model
  assert "inner_dim" in load_config_file("tnt", "tnt_s").model
  assert "tokens_type" in load_config_file("t2t", "t2t_vit_14").model
  assert "hidden_size" not in load_config_file("bit", "R50x1").model


def _runnable_config():
  config = base_config("ViT-micro/4")
  config.batch_size, config.train.steps, config.optim.warmup_steps = 8, 10, 2
  return config


@pytest.mark.parametrize("key, value, expected", [
    ("train.log_every", 0, "config.train.log_every=0: steps between logged metrics must be at least 1"),
    ("train.checkpoint_every", 0, "config.train.checkpoint_every=0"),
    ("train.keep_checkpoints", 0, "config.train.keep_checkpoints=0"),
    ("train.accum_steps", 0, "config.train.accum_steps=0"),
    ("batch_size", -8, "config.batch_size=-8"),
    ("batch_size", 0, "config.batch_size=0"),
    ("eval_batch_size", 0, "config.eval_batch_size=0"),
    ("train.accum_steps", 3, "config.batch_size=8 is not divisible by config.train.accum_steps=3"),
    ("train.steps", -1, "config.train.steps=-1"),
    ("train.epochs", 2.0, "set exactly one of config.train.steps, train.epochs, train.examples"),
    ("optim.warmup_steps", 10, "config.optim.warmup_steps=10 is not below config.train.steps=10"),
    ("optim.warmup_steps", -1, "config.optim.warmup_steps=-1"),
    ("init_from", "/no/such/dir", "config.init_from='/no/such/dir' does not exist"),
    ("init_posemb", "bilinear", "config.init_posemb='bilinear' is not a way to carry position "
                                "embeddings to a new grid: set it to one of interpolate_2d, "
                                "interpolate_1d, reset"),
    ("data.pseudo_labels", "/no/such/dir", "config.data.pseudo_labels='/no/such/dir' does not exist"),
    ("data.labeled_repeats", -1, "config.data.labeled_repeats=-1"),
    ("data.eval_cache_mib", -1, "config.data.eval_cache_mib=-1"),
    ("data.score_maps", "/no/such/dir", "config.data.score_maps='/no/such/dir' does not exist"),
    ("loss", "token_label", "config.loss='token_label' trains on a teacher's score maps, and "
                            "config.data.score_maps is empty"),
])
def test_values_that_cannot_work_are_rejected_naming_the_key(key, value, expected):
  config = _runnable_config()
  check_values(config)  # The base is fine...
  *parents, name = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  with pytest.raises(ConfigError) as error:  # ...until this one value changes.
    check_values(config)
  assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_workdir_that_is_a_file_is_rejected_and_urls_are_not_checked(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match="workdir .*file' is a file"):
    check_values(_runnable_config(), str(tmp_path / "file"))
  config = _runnable_config()
  config.init_from = "gs://bucket/pretrain"
  check_values(config, str(tmp_path / "new_workdir"))


@pytest.mark.parametrize("name, arg", CONFIG_ARGS)
def test_every_shipped_config_passes_the_value_checks(name, arg, tmp_path):
  """Given the teacher's score maps that token-labeling configs ask for (a user's directory)."""
  config = load_config_file(name, arg)
  if config.loss == "token_label":
    config.unlock()
    config.data.score_maps = str(tmp_path)
  check_values(config)


def test_home_in_path_keys_is_expanded(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  (tmp_path / "pretrain").mkdir()
  config = _runnable_config().lock()
  config.init_from, config.data.root, config.data.data_dir = "~/pretrain", "~/images", "~/tfds"
  check_values(config)  # ~/pretrain exists under HOME.
  expand_paths(config)
  assert (config.init_from, config.data.root, config.data.data_dir) == (
      f"{tmp_path}/pretrain", f"{tmp_path}/images", f"{tmp_path}/tfds")
  assert paths.expand("gs://b/~x") == "gs://b/~x" and paths.expand(None) is None
