"""Specification of configs/sweeps/data_size.py: three families on four train-split sizes, the
same epochs for every size, each trial a config the trainer accepts with a crop of its image size."""
import pathlib

from vit_jax.configuration import check_values, total_steps
from vit_jax.sweep import sweep_file

SWEEP = pathlib.Path(__file__).resolve().parents[3] / "configs" / "sweeps" / "data_size.py"
TRAIN_EXAMPLES = 1438  # the digits' train split


def test_every_family_trains_on_every_fraction_for_the_same_epochs():
  sweep = sweep_file.load(str(SWEEP))
  assert sweep.varying_keys == ["model_name", "data.image_size", "data.train_split"]
  runs = [(t.overrides["model_name"], t.overrides["data.image_size"], t.overrides["data.train_split"])
          for t in sweep.trials]
  assert runs == [(model, size, f"train[:{fraction}]")
                  for model, size in (("ViT-tiny/4", 16), ("BiT-testing", 32), ("R+ViT-testing", 32))
                  for fraction in ("10%", "25%", "50%", "100%")]
  assert (sweep.config.train.epochs, sweep.config.data.test_split) == (60.0, "test")
  assert not any("train.epochs" in t.overrides or "data.test_split" in t.overrides
                 for t in sweep.trials)
  # The same epochs: steps in proportion to the examples (144 of 1,438 train images: 68 steps).
  assert total_steps(sweep.config, 144) == 68 and total_steps(sweep.config, TRAIN_EXAMPLES) == 675


def test_each_trial_crops_to_its_own_image_size_and_passes_the_value_checks():
  sweep = sweep_file.load(str(SWEEP))
  for trial in sweep.trials:
    config = sweep_file.apply_overrides(sweep.config, trial.overrides).copy_and_resolve_references()
    size = trial.overrides["data.image_size"]
    assert config.data.pp_batch == f"inception_crop({size}, area_min=0.8)|value_range(-1, 1)"
    assert dict(config.model) == {}  # each family's registered variant, nothing overridden
    check_values(config)
