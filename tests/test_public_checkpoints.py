"""Public checkpoints by name: `config.init_from='ViT-B/16:i21k'` reads that gs:// file, a config for
another model is refused before jax starts naming the settings that would read it, and a mistyped
name gets the closest ones. Nothing is downloaded: the loop's use of a name is checked with a name
pointed at a local file."""
import jax
import pytest

from vit_jax import model_fields, public_checkpoints
from vit_jax.configuration import ConfigError, base_config, check_values

from .states import ROOT, digits_config, random_state


def test_every_name_is_model_colon_tag_for_a_model_we_build():
  variants = {name for family in model_fields.FAMILY_MODULES
              for name in model_fields._variant_table(family)[1]}  # pylint: disable=protected-access
  assert len(public_checkpoints.PUBLIC_CHECKPOINTS) == 23
  for name, entry in public_checkpoints.PUBLIC_CHECKPOINTS.items():
    model, tag = name.split(":")
    assert model == entry.model_name and model in variants and tag
    assert entry.path.startswith("gs://") and entry.path.endswith(".npz")
    assert entry.image_size in (224, 384) and entry.num_classes in (1000, 21843)
  entry = public_checkpoints.lookup("ViT-B/16:i21k")
  assert entry.path == "gs://vit_models/imagenet21k/ViT-B_16.npz" and entry.representation_layer
  assert public_checkpoints.resolve("R50+ViT-B/16:i21k+i1k") == (
      "gs://vit_models/imagenet21k+imagenet2012/R50+ViT-B_16.npz")
  assert public_checkpoints.resolve("/some/run") == "/some/run"


def config_from(init_from, model_name="ViT-B/16", classifier=None):
  config = base_config(model_name)
  config.train.steps = 10
  config.init_from = init_from
  config.model.classifier = classifier
  return config


def test_a_name_for_the_configs_model_passes_the_checks():
  check_values(config_from("ViT-B/16:augreg-i21k"))
  check_values(config_from("ViT-S/16:i1k-300ep", "ViT-S/16", "gap"))


def test_a_name_for_another_model_is_refused_naming_the_settings_that_read_it():
  with pytest.raises(ConfigError, match=r"init_from='ViT-L/16:i21k' holds a ViT-L/16 with "
                                        r"classifier='token' \(trained at 224 px\); the config builds a "
                                        r"ViT-B/16 .* set --config.model_name=ViT-L/16"):
    check_values(config_from("ViT-L/16:i21k"))
  with pytest.raises(ConfigError, match=r"--config.model.classifier=gap"):
    check_values(config_from("ViT-S/16:i1k-90ep", "ViT-S/16"))


def test_a_mistyped_name_gets_the_closest_names():
  with pytest.raises(ConfigError, match=r"does not exist: .*\(did you mean 'ViT-B/16:i21k'"):
    check_values(config_from("ViT-B/16:i21"))


def test_the_loop_reads_the_file_a_name_stands_for(monkeypatch, tmp_path):
  from vit_jax.data import sources  # pylint: disable=import-outside-toplevel
  from vit_jax.train import loop  # pylint: disable=import-outside-toplevel
  monkeypatch.setitem(public_checkpoints.PUBLIC_CHECKPOINTS, "ViT-tiny/4:digits",
                      public_checkpoints.PublicCheckpoint(
                          str(ROOT / "tests/fixtures/default_job.npz"), "ViT-tiny/4", 32, 10))
  config = digits_config("ViT-tiny/4", stage="finetune")
  s = loop.setup(config, sources.get_source(config.data))
  state = loop.load_init_weights(random_state(s.abstract_state), s, "ViT-tiny/4:digits",
                                 str(tmp_path))
  report = (tmp_path / "init_report.txt").read_text()
  assert "default_job.npz" in report and "reset    head/kernel" in report
  embedding = jax.device_get(state.params["embedding"]["kernel"])
  assert abs(float(embedding.std()) - 0.02) > 0.01  # the trained kernel, not the stand-in's
