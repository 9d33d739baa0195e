"""Specification of report.analyse for a model without a class token (global average pooling): every
token is a patch, and the rollout map is what the mean of the tokens draws from each patch.
(The class-token case, the files and the figures: test_command.py.)"""
import numpy as np
import pytest

from vit_jax.analysis import report
from vit_jax.models import create_model

from ..models.tiny import random_variables


def test_a_gap_model_is_analysed_over_all_its_tokens_in_padded_chunks():
  model = create_model("ViT-micro/4", num_classes=3, classifier="gap")
  images = np.random.default_rng(0).normal(size=(5, 16, 16, 3)).astype(np.float32)
  arrays = report.analyse(model, random_variables(model)["params"], images, samples=2, batch_size=4)
  assert "class_token_share" not in arrays
  assert arrays["position_similarity"].shape == (4, 4, 4, 4)
  per_image = arrays["attention_distance_per_image"]
  assert per_image.shape == (5, 2, 2)  # two chunks of 4, the second padded: 5 images kept
  assert per_image.min() >= 0 and per_image.max() <= 12 * np.sqrt(2)
  assert arrays["rollout"].shape == (2, 16, 16) and arrays["rollout"].min() >= 0
  np.testing.assert_allclose(arrays["rollout"].sum(axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(arrays["rollout_maps"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(arrays["sample_images"], images[:2])
  summary = report.summarise(arrays, model, model="ViT-micro/4")
  assert summary["class_token"] is False and "class_token_share_per_layer" not in summary
  with pytest.raises(ValueError, match="the attention analyses need at least one image"):
    report.analyse(model, random_variables(model)["params"], images[:0])
