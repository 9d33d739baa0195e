"""Specification of the FLOP counts behind MFU: the published per-image GMACs of the ViT family."""
import pytest

from vit_jax import flops
from vit_jax.models import create_model

# docs/architectures.md#vit-variants (matmul/conv MACs per image, 224 px, 1000 classes; torch's flop
# counter, printed to 3 decimals).
PUBLISHED_GMACS = {"ViT-Ti/16": 1.254, "ViT-S/16": 4.599, "ViT-S/32": 1.143, "ViT-B/16": 17.564,
                   "ViT-B/32": 4.409, "ViT-L/16": 61.555, "ViT-L/32": 15.377, "ViT-H/14": 167.294}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_vit_macs_match_published(name):
  assert flops.vit_forward_macs(create_model(name)) / 1e9 == pytest.approx(
      PUBLISHED_GMACS[name], abs=2e-3)


def test_higher_resolution_counts():
  assert flops.vit_forward_macs(create_model("ViT-B/16", image_size=384)) / 1e9 == pytest.approx(
      55.484, abs=1e-3)
  assert flops.vit_forward_macs(create_model("ViT-H/14", image_size=518)) / 1e9 == pytest.approx(
      1016.7, abs=0.1)


def test_training_step_is_three_forward_passes():
  model = create_model("ViT-S/16")
  assert flops.train_flops_per_example(model) == 6 * flops.vit_forward_macs(model)


def test_families_without_a_formula_use_xla_counts_close_to_the_formula():
  model = create_model("ViT-micro/4", num_classes=10)
  analytic = 2 * flops.vit_forward_macs(model)
  assert flops._xla_forward_flops(model) == pytest.approx(analytic, rel=0.1)  # plus softmax etc.


def test_peaks_come_from_the_vendor_table_or_a_measurement():
  assert flops.PEAK_FLOPS["H100"]["bfloat16"] == 989e12
  assert flops.peak_flops_per_device("float32") > 1e9  # measured on this CPU
