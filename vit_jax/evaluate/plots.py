"""The confusion-matrix figure of `python -m vit_jax.evaluate`, drawn with matplotlib (no pyplot:
nothing global is touched and no display is needed). Up to MAX_CLASSES classes: beyond, a cell is
smaller than a pixel of a readable figure, and the per-class accuracies in metrics.json say more.
"""
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

CONFUSION_MATRIX = "confusion_matrix.png"
MAX_CLASSES = 100
DPI = 100
_COUNTS_UP_TO = 20  # classes up to which every cell is labelled with its count
_NAMES_UP_TO = 40   # classes up to which every tick is labelled with its class name


def figure_inches(num_classes: int) -> tuple[float, float]:
  """(width, height) in inches: the matrix grows with the classes, from 5 to 16 inches high, and the
  colour bar takes 1.3 inches beside it."""
  side = min(16.0, max(5.0, 2.5 + 0.14 * num_classes))
  return side + 1.3, side


def figure_pixels(num_classes: int) -> tuple[int, int]:
  """(height, width) of the PNG: the figure is saved at its full size, DPI pixels an inch."""
  width, height = figure_inches(num_classes)
  return int(round(height * DPI)), int(round(width * DPI))


def confusion_figure(confusion: np.ndarray, names: Sequence[str], title: str = "") -> Figure:
  """Rows: the true classes, columns: the predicted ones. Each cell's colour is its share of its row
  (the diagonal is each class's accuracy, comparable between classes of any size); up to 20
  classes each cell also shows its count."""
  confusion = np.asarray(confusion)
  count = len(confusion)
  if count > MAX_CLASSES:
    raise ValueError(f"a confusion matrix of {count} classes is not drawn (at most {MAX_CLASSES})")
  rows = confusion.sum(axis=1, keepdims=True)
  shares = confusion / np.maximum(rows, 1)
  figure = Figure(figsize=figure_inches(count), dpi=DPI, layout="compressed")
  axes = figure.add_subplot()
  image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
  if count <= _COUNTS_UP_TO:
    for (row, col), value in np.ndenumerate(confusion):
      if value:
        axes.text(col, row, str(value), ha="center", va="center", fontsize=8,
                  color="white" if shares[row, col] > 0.5 else "black")
  ticks = np.arange(count) if count <= _NAMES_UP_TO else np.arange(0, count, max(1, count // 20))
  labels = [str(names[t]) if count <= _NAMES_UP_TO else str(t) for t in ticks]
  axes.set_xticks(ticks, labels, rotation=90 if max(map(len, labels)) > 2 else 0, fontsize=8)
  axes.set_yticks(ticks, labels, fontsize=8)
  axes.set_xlabel("predicted class")
  axes.set_ylabel("true class")
  axes.set_title(title or f"confusion matrix ({int(confusion.sum())} examples)")
  figure.colorbar(image, ax=axes, label="share of the true class", fraction=0.046, pad=0.04)
  return figure


def write_confusion(path: str, confusion: np.ndarray, names: Sequence[str], title: str = "") -> str:
  """Saves the figure as a PNG of figure_pixels(classes); returns the path."""
  confusion_figure(confusion, names, title).savefig(path, dpi=DPI)
  return path
