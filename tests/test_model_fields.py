"""Specification of the model fields a config exposes: read from the family sources, they equal the
flax dataclass fields of every family, so `--config.model.<field>` covers each family's own fields."""
import dataclasses
import subprocess
import sys

import pytest

from vit_jax import model_fields
from vit_jax.models import registry


@pytest.mark.parametrize("name", registry.list_models())
def test_fields_read_from_the_source_are_the_family_dataclass_fields(name):
  family = registry.VARIANTS[name].family
  assert model_fields.family_of(name)[1] == family.__name__
  settable = {f.name for f in dataclasses.fields(family)} - model_fields.SET_BY_TRAINER
  assert set(model_fields.family_fields(name)) == settable


def test_family_specific_fields_are_typed():
  assert model_fields.family_fields("LV-ViT-S")["skip_lam"] is float
  assert model_fields.family_fields("TNT-S/16")["inner_dim"] is int
  assert model_fields.family_fields("T2T-ViT-14")["tokens_type"] is str
  assert model_fields.family_fields("ViT-B/16")["representation_size"] is int  # Optional[int]
  assert model_fields.family_fields("ViT-B/16")["dtype"] is str


def test_an_unknown_model_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="unknown model 'ViT-X/16'.*ViT-B/16"):
    model_fields.family_of("ViT-X/16")


def test_reading_the_fields_imports_neither_jax_nor_flax():
  code = ("import sys\nfrom vit_jax import model_fields\nmodel_fields.family_fields('LV-ViT-S')\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'tensorflow')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
