"""Specification of loading a sweep file: get_config() and get_sweep() from one file, every trial
named and checked against the config before anything runs, mistakes named in one line."""
import pathlib
import textwrap

import pytest

from vit_jax.sweep import sweep_file

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_sweep(tmp_path, sweep_body, config_body="return base_config('ViT-micro/4').lock()"):
  path = tmp_path / "sweep.py"
  path.write_text(textwrap.dedent(f"""\
      from vit_jax.configuration import base_config
      from vit_jax.sweep.space import axis, product

      def get_config(arg=None):
        {config_body}

      def get_sweep(arg=None):
        {sweep_body}
      """))
  return str(path)


def test_a_sweep_file_gives_its_config_and_named_trials(tmp_path):
  path = write_sweep(tmp_path, "return product(axis('optim.weight_decay', [0.0, 0.1]), "
                               "axis('model.dropout_rate', [0.1]))")
  sweep = sweep_file.load(path)
  assert sweep.config.model_name == "ViT-micro/4" and sweep.spec == path
  assert [(t.name, t.overrides) for t in sweep.trials] == [
      ("weight_decay=0,dropout_rate=0.1", {"optim.weight_decay": 0.0, "model.dropout_rate": 0.1}),
      ("weight_decay=0.1,dropout_rate=0.1", {"optim.weight_decay": 0.1, "model.dropout_rate": 0.1})]
  assert sweep.swept_keys == ["optim.weight_decay", "model.dropout_rate"]
  assert sweep.varying_keys == ["optim.weight_decay"]


def test_the_argument_after_the_colon_goes_to_get_config_and_get_sweep(tmp_path):
  path = write_sweep(tmp_path, "return axis('seed', [int(arg)])",
                     config_body="return base_config(arg and 'ViT-tiny/4').lock()")
  sweep = sweep_file.load(f"{path}:7")
  assert sweep.trials[0].overrides == {"seed": 7}
  assert sweep.config.model_name == "ViT-tiny/4"


def test_the_regularization_sweep_loads_and_sets_keys_the_config_has():
  sweep = sweep_file.load(str(ROOT / "configs/sweeps/regularization.py"))
  assert 1 < len(sweep.trials) <= 12
  assert sweep.varying_keys == ["optim.weight_decay", "model.dropout_rate", "train.label_smoothing"]
  assert sweep.config.data.source == "digits"


@pytest.mark.parametrize("sweep_body, message", [
    ("return axis('optim.weight_decy', [0.1])",
     "trial weight_decy=0.1: unknown config key config.optim.weight_decy; did you mean "
     "config.optim.weight_decay"),
    ("return axis('optim.weight_decay.x', [0.1])",
     "trial x=0.1: unknown config key config.optim.weight_decay.x"),
    ("return axis('batch_size', [1.5])",
     "trial batch_size=1.5: config.batch_size=1.5 does not fit the config: "),
    ("return [{'seed': 1}, {'seed': 1}]", "trials 1 and 2 have the same overrides {'seed': 1}"),
    ("return []", "get_sweep() must return a non-empty list of dicts"),
    ("return {'seed': 1}", "get_sweep() must return a non-empty list of dicts of overrides, got dict"),
])
def test_a_mistake_in_the_sweep_is_one_line_naming_the_trial_and_key(tmp_path, sweep_body, message):
  with pytest.raises(sweep_file.SweepError) as error:
    sweep_file.load(write_sweep(tmp_path, sweep_body))
  assert message in str(error.value) and "\n" not in str(error.value)


def test_a_file_without_get_sweep_or_that_does_not_exist_is_named(tmp_path):
  plain = tmp_path / "plain.py"
  plain.write_text("def get_config():\n  return None\n")
  with pytest.raises(sweep_file.SweepError, match="plain.py has no get_sweep()"):
    sweep_file.load(str(plain))
  with pytest.raises(sweep_file.SweepError, match="missing.py does not exist"):
    sweep_file.load(str(tmp_path / "missing.py"))


def test_overrides_apply_to_a_copy_with_the_configs_type_checks(tmp_path):
  config = sweep_file.load(write_sweep(tmp_path, "return axis('seed', [1])")).config
  changed = sweep_file.apply_overrides(config, {"optim.weight_decay": 1, "seed": 3})
  assert (changed.optim.weight_decay, changed.seed, config.seed) == (1.0, 3, 0)
  assert isinstance(changed.optim.weight_decay, float)
  with pytest.raises(TypeError):
    sweep_file.apply_overrides(config, {"optim.weight_decay": "high"})
