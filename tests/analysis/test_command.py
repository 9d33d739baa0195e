"""Specification of `python -m vit_jax.analysis` on the default job's trained checkpoint
(tests/default_job.py: ViT-tiny/4, 4 layers of 4 heads, fine-tuned on the digits at 32 px: an 8x8
grid of 4 px patches and a class token), over real
test images. What is asserted must hold:
  - the principal components are orthonormal: PCA's directions are, for any filters;
  - each position embedding is most similar to itself (a cosine similarity is at most 1, reached by
    the vector itself), and this trained table's most similar other embedding is a grid neighbour for
    every position (experiments/README.md, "Figure 7 on the digits");
  - attention distances lie in [0, the largest patch-centre distance] within [0, the image diagonal]:
    each is an average of those distances under non-negative weights that sum to 1;
  - rollout rows are non-negative and sum to 1 (products of row-stochastic matrices), and the maps,
    the class token's row over the patches, are non-negative.
"""
import json

import numpy as np
import pytest

from vit_jax.analysis import command, plots, report
from vit_jax.config_cli import load_config_file

from .. import default_job
from ..states import ROOT

IMAGES, SAMPLES = 24, 3


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
  workdir = default_job.save_run(tmp_path_factory.mktemp("default_job"))
  output = tmp_path_factory.mktemp("figures")
  written, summary = command.run(default_job.config(), str(workdir), str(output), images=IMAGES,
                                 samples=SAMPLES)
  return output, written, summary, dict(np.load(output / report.NUMBERS))


def test_the_command_writes_four_figures_and_the_numbers_behind_them(analysed):
  output, written, summary, numbers = analysed
  names = [report.NUMBERS, report.SUMMARY, plots.FILTERS, plots.POSITION_SIMILARITY,
           plots.ATTENTION_DISTANCE, plots.ATTENTION_ROLLOUT]
  assert sorted(written) == sorted(str(output / name) for name in names)
  for name in names[2:]:
    assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((output / report.SUMMARY).read_text()) == {**summary, "files": names}
  assert summary["images"] == IMAGES and summary["rollout_samples"] == SAMPLES
  assert (summary["grid"], summary["layers"], summary["heads"], summary["class_token"]) == (8, 4, 4, True)
  assert numbers["sample_images"].shape == (SAMPLES, 32, 32, 3)
  assert numbers["sample_images"].std() > 0.1  # real digits, not padding


def test_principal_components_of_the_filters_are_orthonormal(analysed):
  components = analysed[3]["filter_components"]
  assert components.shape == (28, 4, 4, 3)
  flat = components.reshape(28, -1)
  np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-5)


def test_each_position_embedding_is_most_similar_to_itself_then_to_a_neighbour(analysed):
  _, _, summary, numbers = analysed
  flat = numbers["position_similarity"].reshape(64, 64)
  assert list(flat.argmax(axis=1)) == list(range(64))
  np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-6)
  assert summary["position_similarity"]["most_similar_other_is_a_neighbour"] == 1.0


def test_attention_distances_lie_between_zero_and_the_image_diagonal(analysed):
  _, _, summary, numbers = analysed
  per_image = numbers["attention_distance_per_image"]
  pixels = summary["attention_distance_pixels"]
  assert per_image.shape == (IMAGES, 4, 4)
  assert per_image.min() >= 0 and per_image.max() <= pixels["largest_possible"] + 1e-4
  assert pixels["largest_possible"] == pytest.approx(28 * np.sqrt(2), abs=1e-4)  # 7 cells of 4 px
  assert pixels["largest_possible"] < pixels["image_diagonal"] == pytest.approx(32 * np.sqrt(2), abs=1e-4)
  np.testing.assert_allclose(numbers["attention_distance"], per_image.mean(axis=0), rtol=1e-5)
  assert 0 <= numbers["class_token_share"].min() and numbers["class_token_share"].max() <= 1


def test_rollout_rows_sum_to_one_and_its_maps_are_non_negative(analysed):
  numbers = analysed[3]
  rolled = numbers["rollout"]
  assert rolled.shape == (SAMPLES, 65, 65) and rolled.min() >= 0
  np.testing.assert_allclose(rolled.sum(axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(numbers["rollout_maps"].reshape(SAMPLES, 64), rolled[:, 0, 1:])
  assert numbers["rollout_image_maps"].shape == (SAMPLES, 32, 32)
  assert numbers["rollout_image_maps"].min() >= 0


def test_other_families_are_refused_in_one_line_naming_what_would_apply():
  """Before anything is restored: the checkpoint path does not even exist."""
  with pytest.raises(ValueError, match=r"^the Figure 7 analyses cover the ViT family \(ViT-\* models\); "
                                       r"BiT-testing is a ResNetV2: it is a CNN: without position "
                                       r"embeddings or attention none of them applies$"):
    command.run(load_config_file(str(ROOT / "configs/bit.py:test")), "/nonexistent", "/nonexistent")
