"""The figures of vit_jax.analysis as PNG files, drawn with matplotlib from the arrays of report.py
(no pyplot: figures are objects, so nothing global is touched and no display is needed)."""
import os
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from vit_jax.analysis.filters import for_display

FILTERS = "filters.png"
POSITION_SIMILARITY = "position_similarity.png"
ATTENTION_DISTANCE = "attention_distance.png"
ATTENTION_ROLLOUT = "attention_rollout.png"
_DPI = 150


def write_all(output: str, arrays: dict[str, np.ndarray], summary: dict, labels: Any = None) -> list[str]:
  """Draws the four figures into `output`; returns their paths."""
  figures = {
      FILTERS: filters_figure(arrays["filter_components"]),
      POSITION_SIMILARITY: position_similarity_figure(arrays["position_similarity"]),
      ATTENTION_DISTANCE: attention_distance_figure(
          arrays["attention_distance"], summary["attention_distance_pixels"]["uniform_attention"],
          summary["attention_distance_pixels"]["largest_possible"], summary["images"]),
      ATTENTION_ROLLOUT: rollout_figure(arrays["sample_images"], arrays["rollout_image_maps"], labels),
  }
  paths = []
  for name, figure in figures.items():
    paths.append(os.path.join(output, name))
    figure.savefig(paths[-1], dpi=_DPI, bbox_inches="tight")
  return paths


def filters_mosaic(components: np.ndarray, columns: int = 7) -> np.ndarray:
  """The components (k, P, P, 3), each scaled to [0, 1] alone, laid out row by row, `columns` to a
  row as in the paper, one white pixel apart (one image: one imshow however many there are)."""
  shown = for_display(components)
  count, side = len(shown), shown.shape[1]
  rows, step = -(-count // columns), side + 1
  mosaic = np.ones((rows * step - 1, columns * step - 1, shown.shape[-1]), np.float32)
  for i, component in enumerate(shown):
    row, col = divmod(i, columns)
    mosaic[row * step:row * step + side, col * step:col * step + side] = component
  return mosaic


def filters_figure(components: np.ndarray, columns: int = 7) -> Figure:
  """The principal components as P x P RGB images, the first (most variance) at the top left."""
  mosaic = filters_mosaic(components, columns)
  figure = Figure(figsize=(7.0, 7.0 * mosaic.shape[0] / mosaic.shape[1] + 0.5))
  axes = figure.add_subplot()
  axes.imshow(mosaic, interpolation="nearest")
  axes.set_axis_off()
  axes.set_title(f"RGB embedding filters (first {len(components)} principal components)")
  return figure


def similarity_mosaic(similarity: np.ndarray) -> np.ndarray:
  """The (g, g, g, g) maps laid out as one image: map (r, c) at block (r, c), blocks apart by one NaN
  row or column (drawn blank)."""
  side = similarity.shape[0]
  step = side + 1
  mosaic = np.full((side * step - 1, side * step - 1), np.nan, np.float32)
  for row in range(side):
    for col in range(side):
      mosaic[row * step:row * step + side, col * step:col * step + side] = similarity[row, col]
  return mosaic


def position_similarity_figure(similarity: np.ndarray) -> Figure:
  """For every input patch (row, column), the cosine similarity of its position embedding with those
  of all patches, as in the paper's Figure 7 (centre)."""
  side = similarity.shape[0]
  cmap = colormaps["viridis"].with_extremes(bad="white")
  figure = Figure(figsize=(6.4, 5.6))
  axes = figure.add_subplot()
  image = axes.imshow(similarity_mosaic(similarity), cmap=cmap, vmin=-1.0, vmax=1.0,
                      interpolation="nearest")
  centres = np.arange(side) * (side + 1) + (side - 1) / 2
  ticks = np.arange(side) if side <= 16 else np.arange(0, side, max(1, side // 8))
  axes.set_xticks(centres[ticks], [str(t + 1) for t in ticks])
  axes.set_yticks(centres[ticks], [str(t + 1) for t in ticks])
  axes.set_xlabel("input patch column")
  axes.set_ylabel("input patch row")
  axes.set_title("position embedding similarity")
  figure.colorbar(image, ax=axes, label="cosine similarity", fraction=0.046, pad=0.04)
  return figure


def attention_distance_figure(distance: np.ndarray, uniform: float, largest: float,
                              images: int) -> Figure:
  """Mean attention distance (pixels) of every head (one dot each) against the layer index, with the
  distance uniform attention would give, as in the paper's Figure 7 (right)."""
  layers, heads = distance.shape
  figure = Figure(figsize=(5.2, 4.0))
  axes = figure.add_subplot()
  colours = colormaps["tab20" if heads > 10 else "tab10"]
  depth = np.arange(1, layers + 1)
  for head in range(heads):
    axes.scatter(depth, distance[:, head], s=14, color=colours(head % colours.N),
                 label=f"head {head + 1}" if heads <= 16 else None)
  axes.axhline(uniform, color="grey", linestyle="--", linewidth=0.8, label="uniform attention")
  axes.set_xlim(0.5, layers + 0.5)
  axes.set_ylim(0, max(largest, float(distance.max())) * 1.05)
  axes.set_xticks(depth if layers <= 16 else depth[::max(1, layers // 8)])
  axes.set_xlabel("network depth (layer)")
  axes.set_ylabel("mean attention distance (pixels)")
  axes.set_title(f"mean attention distance over {images} images")
  axes.legend(fontsize=6, loc="lower right", ncols=2)
  return figure


def _unit_range(images: np.ndarray) -> np.ndarray:
  """Each image scaled to [0, 1] on its own, for display whatever the model's input range."""
  low = images.min(axis=(1, 2, 3), keepdims=True)
  span = images.max(axis=(1, 2, 3), keepdims=True) - low
  return (images - low) / np.where(span > 0, span, 1.0)


def rollout_figure(images: np.ndarray, maps: np.ndarray, labels: Any = None) -> Figure:
  """Each sample image (top) and its attention rollout map over it (bottom; each map scaled to its
  maximum)."""
  count = len(images)
  figure = Figure(figsize=(1.6 * count, 3.6))
  figure.suptitle("attention rollout")
  shown = _unit_range(np.asarray(images, np.float32))
  peaks = maps.max(axis=(1, 2), keepdims=True)
  scaled = maps / np.where(peaks > 0, peaks, 1.0)
  for i in range(count):
    top = figure.add_subplot(2, count, i + 1)
    top.imshow(shown[i], interpolation="nearest")
    if labels is not None:
      top.set_title(f"label {labels[i]}", fontsize=8)
    top.set_axis_off()
    bottom = figure.add_subplot(2, count, count + i + 1)
    bottom.imshow(shown[i].mean(axis=-1), cmap="gray", interpolation="nearest")
    bottom.imshow(scaled[i], cmap="inferno", alpha=0.65, vmin=0.0, vmax=1.0, interpolation="nearest")
    bottom.set_axis_off()
  return figure
