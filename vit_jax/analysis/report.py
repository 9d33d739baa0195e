"""Figure 7 of the ViT paper for one model: the numbers (analysis.npz, analysis.json) and the figures.

  filters.png              the first 28 principal components of the patch-embedding filters (RGB)
  position_similarity.png  cosine similarity of each position embedding with every other (grid of maps)
  attention_distance.png   mean attention distance per head against depth, over a batch of images
  attention_rollout.png    attention rollout maps over sample images
"""
import json
import os
from typing import Any

import numpy as np

from vit_jax.analysis import attention, filters, plots, position_similarity, readout
from vit_jax.models.vit import VisionTransformer

NUMBERS = "analysis.npz"
SUMMARY = "analysis.json"


def analyse(model: VisionTransformer, params: Any, images: np.ndarray, *, samples: int = 8,
            batch_size: int = 32, filter_count: int = filters.PAPER_COUNT) -> dict[str, np.ndarray]:
  """The arrays behind the four figures, for a ViT (check readout.check_covered first) and images
  in its input range, (N, image_size, image_size, 3); rollout maps for the first `samples` of them."""
  if len(images) == 0:
    raise ValueError("the attention analyses need at least one image")
  params = readout.unrolled_params(params)
  class_token = model.interface.class_token
  components, explained = filters.principal_components(readout.embedding_kernel(params), filter_count)
  arrays = {
      "filter_components": components,
      "filter_explained_variance_ratio": explained,
      "position_similarity": position_similarity.cosine_similarity(
          readout.position_embedding(params), class_token),
  }
  distances, shares, rolled = [], [], []
  for layers in readout.attention_weights(readout.analysis_model(model), {"params": params}, images,
                                          batch_size):
    distances.append(np.stack([attention.mean_distance(w, model.image_size, class_token)
                               for w in layers], axis=1))  # (chunk, layers, heads)
    if class_token:
      shares.append(np.stack([attention.class_token_share(w) for w in layers], axis=1))
    if sum(len(r) for r in rolled) < samples:
      rolled.append(attention.rollout(layers))
  arrays["attention_distance_per_image"] = np.concatenate(distances)
  arrays["attention_distance"] = arrays["attention_distance_per_image"].mean(axis=0)
  if class_token:
    arrays["class_token_share"] = np.concatenate(shares).mean(axis=0)
  arrays["rollout"] = np.concatenate(rolled)[:samples]
  maps = attention.rollout_maps(arrays["rollout"], class_token)
  arrays["rollout_maps"] = maps
  arrays["rollout_image_maps"] = attention.upsample(maps, model.image_size)
  arrays["sample_images"] = np.asarray(images[:len(maps)], np.float32)
  return arrays


def summarise(arrays: dict[str, np.ndarray], vit: VisionTransformer, **about: Any) -> dict:
  """What analysis.json records: `about` (model name, checkpoint, split ...), the sizes, and the
  figures' numbers in a form one reads (per-layer means, the neighbour fraction)."""
  side = arrays["position_similarity"].shape[0]
  distance = arrays["attention_distance"]
  pairwise = attention.patch_distances(side, vit.image_size)
  summary = {
      **about,
      "image_size": vit.image_size, "patch_size": vit.patch_size, "grid": side,
      "layers": int(distance.shape[0]), "heads": int(distance.shape[1]),
      "classifier": vit.classifier, "class_token": vit.interface.class_token,
      "images": int(arrays["attention_distance_per_image"].shape[0]),
      "filters": {
          "components": int(arrays["filter_components"].shape[0]),
          "explained_variance_ratio": _rounded(arrays["filter_explained_variance_ratio"]),
      },
      "position_similarity": {
          "most_similar_other_is_a_neighbour": position_similarity.neighbour_fraction(
              arrays["position_similarity"]),
          "mean_by_grid_distance": _rounded(
              position_similarity.mean_by_distance(arrays["position_similarity"])),
      },
      "attention_distance_pixels": {
          "per_layer_and_head": _rounded(distance),
          "mean_per_layer": _rounded(distance.mean(axis=1)),
          "uniform_attention": round(float(pairwise.mean()), 4),
          "largest_possible": round(float(pairwise.max()), 4),
          "image_diagonal": round(float(np.sqrt(2) * vit.image_size), 4),
      },
      "rollout_samples": int(arrays["rollout_maps"].shape[0]),
  }
  if "class_token_share" in arrays:
    summary["class_token_share_per_layer"] = _rounded(arrays["class_token_share"].mean(axis=1))
  return summary


def write(output: str, arrays: dict[str, np.ndarray], summary: dict,
          labels: Any = None) -> list[str]:
  """Writes the numbers and the four figures into `output` (created); returns the files' paths."""
  os.makedirs(output, exist_ok=True)
  written = [os.path.join(output, NUMBERS), os.path.join(output, SUMMARY)]
  np.savez_compressed(written[0], **arrays)
  written += plots.write_all(output, arrays, summary, labels)
  with open(written[1], "w", encoding="utf-8") as f:
    json.dump({**summary, "files": [os.path.basename(p) for p in written]}, f, indent=1)
    f.write("\n")
  return written


def _rounded(values: Any) -> Any:
  return np.round(np.asarray(values, np.float64), 4).tolist()
