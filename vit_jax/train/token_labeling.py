"""Token labeling (Jiang et al. 2021): dense per-token targets from stored score maps, and their loss.

A machine annotator's score map per training image is stored as its top-k logits and class indices on an
(H', W') grid (official: NFNet-F6, top-5 on 18x18). For each augmented crop the targets are read off the
map with RoIAlign over the crop box: a (label_size x label_size) grid for the patch tokens and a 1x1 cell
for the class token, softmaxed and label-smoothed (docs/architectures.md#token-labeling). The loss
pairs them with LVViT's DenseOutput (models/lvvit.py), whose MixToken box mixes the class target.
Everything here is jnp and jittable, so it can run inside the train step on the batch's devices.

`config.loss='token_label'` trains with it: with config.data.score_maps set, the train batch
carries each image's stored map (SCORE_VALUES, SCORE_INDICES: the top-k logits (B, K, H', W') and
their class ids) and the crop it shows (CROP (B, 4): top/H, left/W, height/H, width/W of the source
image, mirrored first with its map where the image was mirrored; data/score_maps.join), and WARP
(B, 6), how RandAugment moved the crop's content (data/geometry.py), besides 'image' and 'label';
the targets are built from them inside the step.
"""
import dataclasses
import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from vit_jax.data.batch_keys import CROP, SCORE_INDICES, SCORE_VALUES, WARP
from vit_jax.models.interface import DenseOutput
from vit_jax.models.lvvit import mixtoken_lam
from vit_jax.train.losses import register_dense_loss


class TokenLabelTargets(NamedTuple):
  """Soft targets, class axis last: the image label, the class-token label and one label per token."""
  ground_truth: jax.Array  # (B, C) smoothed one-hot of the dataset label
  cls: jax.Array           # (B, C) the annotator's label for the whole crop (1x1 RoIAlign)
  dense: jax.Array         # (B, label_size**2, C) row-major over the token grid


class ScoreMaps(NamedTuple):
  """One batch of stored annotations with the crop each image was cut with."""
  values: jax.Array        # (B, K, H', W') top-k logits
  indices: jax.Array       # (B, K, H', W') their class ids (any numeric dtype)
  crop: jax.Array          # (B, 4) (top/H, left/W, height/H, width/W) of the RandomResizedCrop
  ground_truth: jax.Array  # (B,) dataset label ids
  # (B, 6) RandAugment's warp of the crop (data/geometry.py: WARP); None: not warped
  warp: Optional[jax.Array] = None


def unpack_official(label_maps_topk: jax.Array) -> ScoreMaps:
  """Splits the official batch tensor (B, 3, K, H', W') = [values, indices, coords channel].

  The coords channel holds the crop at [:, 2, 0, 0, 0:4] and the ground truth at [:, 2, 0, 0, 5].
  """
  return ScoreMaps(values=label_maps_topk[:, 0], indices=label_maps_topk[:, 1],
                   crop=label_maps_topk[:, 2, 0, 0, :4],
                   ground_truth=label_maps_topk[:, 2, 0, 0, 5].astype(jnp.int32))


def dense_logit_maps(values: jax.Array, indices: jax.Array, num_classes: int) -> jax.Array:
  """(B, K, H, W) top-k logits and ids -> (B, H, W, C) logits, 0 (not -inf) for the other classes."""
  one_hot = jax.nn.one_hot(indices.astype(jnp.int32), num_classes, dtype=jnp.float32)
  return jnp.einsum("bkhw,bkhwc->bhwc", values.astype(jnp.float32), one_hot)


def _roi_axis_weights(start: jax.Array, end: jax.Array, size: int, out: int) -> jax.Array:
  """(out, size) weights of torchvision roi_align (aligned=False, adaptive sampling) along one axis.

  RoIAlign is separable: each output cell averages bilinear samples on a grid of ceil(roi/out) points per
  bin, and the bilinear weight, the out-of-range test and the sample count all factor into a row part and
  a column part. The grid is bounded statically and masked, so this jits.
  """
  roi = jnp.maximum(end - start, 1.0)
  bin_size = roi / out
  grid = jnp.ceil(roi / out)
  max_grid = math.ceil(size / out) + 1  # roi <= size for boxes inside the map
  sample = jnp.arange(max_grid, dtype=jnp.float32)
  cell = jnp.arange(out, dtype=jnp.float32)
  coord = start + cell[:, None] * bin_size + (sample[None, :] + 0.5) * bin_size / grid
  used = (sample[None, :] < grid) & (coord >= -1.0) & (coord <= size)
  coord = jnp.maximum(coord, 0.0)
  low = jnp.floor(coord).astype(jnp.int32)
  at_edge = low >= size - 1
  low = jnp.where(at_edge, size - 1, low)
  high = jnp.where(at_edge, size - 1, low + 1)
  frac = jnp.where(at_edge, 0.0, coord - low)
  weights = (jax.nn.one_hot(low, size) * (1.0 - frac)[..., None]
             + jax.nn.one_hot(high, size) * frac[..., None])
  return jnp.sum(weights * used[..., None], axis=1) / grid


def roi_align(maps: jax.Array, boxes: jax.Array, out: int) -> jax.Array:
  """torchvision.ops.roi_align(maps, boxes, (out, out), spatial_scale=1, sampling_ratio=-1,
  aligned=False) for one box per map, channels last: maps (B, H, W, C), boxes (B, 4) as (x1, y1, x2, y2)
  in map pixels -> (B, out, out, C)."""
  _, height, width, _ = maps.shape

  def one(image, box):
    rows = _roi_axis_weights(box[1], box[3], height, out)
    cols = _roi_axis_weights(box[0], box[2], width, out)
    return jnp.einsum("ph,hwc,qw->pqc", rows, image, cols)
  return jax.vmap(one)(maps.astype(jnp.float32), boxes.astype(jnp.float32))


def warp_grid(grid: jax.Array, warp: jax.Array) -> jax.Array:
  """(B, L, L, C) logits on the crop's token grid -> the logits each token of the warped image
  shows: the cell nearest to where its centre comes from (as the official code moves its maps with
  RandAugment's geometric ops, order 0), logit 0 for every class where that lies outside the crop.

  warp (B, 6) is [a, b, c, d, e, f]: a token centre (u, v) (fractions of the width and height)
  comes from (a u + b v + c, d u + e v + f)."""
  size = grid.shape[1]
  centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  v, u = jnp.meshgrid(centres, centres, indexing="ij")
  a, b, c, d, e, f = (warp[:, i, None, None].astype(jnp.float32) for i in range(6))
  col = jnp.floor((a * u + b * v + c) * size).astype(jnp.int32)
  row = jnp.floor((d * u + e * v + f) * size).astype(jnp.int32)
  inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
  take = jax.vmap(lambda g, r, q: g[r, q])
  moved = take(grid, jnp.clip(row, 0, size - 1), jnp.clip(col, 0, size - 1))
  return jnp.where(inside[..., None], moved, 0.0)


def _rounded_product(x: jax.Array, factor: int) -> jax.Array:
  """float32(x * factor) rounded once, as torch computes it before subtracting 0.5 from a box edge.

  Compiled code may fuse `x * factor - 0.5` into one multiply-add, which moves an edge by an ulp and,
  at exact bin boundaries, changes ceil(roi / out), the number of samples per bin. Here the product is
  formed on integers (x = f 2^e with f 2^24 an integer) and rounded by one int -> float conversion.
  """
  if not 0 < factor < 128:
    raise ValueError(f"score maps must be narrower than 128 cells, got width {factor}")
  mantissa, exponent = jnp.frexp(x.astype(jnp.float32))
  scaled = (mantissa * 2.0 ** 24).astype(jnp.int32) * factor
  return jnp.ldexp(scaled.astype(jnp.float32), exponent - 24)


def _smoothed(probabilities: jax.Array, smoothing: float, num_classes: int) -> jax.Array:
  """The official smoothing: p * (1 - s + s/C) + s/C (so soft labels sum to 1 + s/C, as there)."""
  off = smoothing / num_classes
  return probabilities * (1.0 - smoothing + off) + off


def token_label_targets(maps: ScoreMaps, *, num_classes: int, label_size: int,
                        smoothing: float = 0.1, official_box_order: bool = True,
                        lam: Union[float, jax.Array] = 1.0) -> TokenLabelTargets:
  """The official `mixup_target` on score maps: RoIAlign over the crop, softmax, smoothing.

  official_box_order=True replicates the official code, which hands the crop box (top, left, bottom,
  right) to roi_align as (x1, y1, x2, y2), i.e. transposed relative to the (H', W') map (harmless for
  crops symmetric about the diagonal); False reads the crop geometrically. Box coordinates are scaled by
  the map width W' on both axes, as there. lam < 1 mixes every target with the batch-reversed one
  (image-level mixup/cutmix; MixToken instead mixes the class target in the loss).
  """
  logits = dense_logit_maps(maps.values, maps.indices, num_classes)
  batch, width = logits.shape[0], logits.shape[2]
  top, left, height, crop_width = (maps.crop[:, i].astype(jnp.float32) for i in range(4))
  corners = (top, left, top + height, left + crop_width) if official_box_order else (
      left, top, left + crop_width, top + height)
  boxes = _rounded_product(jnp.stack(corners, axis=1), width) - 0.5
  cls = roi_align(logits, boxes, 1).reshape(batch, num_classes)
  dense = roi_align(logits, boxes, label_size)
  if maps.warp is not None:
    dense = warp_grid(dense, maps.warp)
  dense = dense.reshape(batch, label_size * label_size, num_classes)
  off = smoothing / num_classes  # the usual smoothed one-hot: 1 - s + s/C on the label, s/C elsewhere
  ground_truth = jax.nn.one_hot(maps.ground_truth, num_classes, dtype=jnp.float32) * (1.0 - smoothing)
  targets = TokenLabelTargets(
      ground_truth=ground_truth + off,
      cls=_smoothed(jax.nn.softmax(cls, axis=-1), smoothing, num_classes),
      dense=_smoothed(jax.nn.softmax(dense, axis=-1), smoothing, num_classes))
  return jax.tree.map(lambda t: lam * t + (1.0 - lam) * t[::-1], targets)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """sum_c -t_c log_softmax(x)_c over the last axis (targets need not sum to 1)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True)
class TokenLabelCrossEntropy:
  """cls_weight * CE(x_cls, t_cls mixed by MixToken) + dense_weight * mean over tokens CE(x_aux, t_dense).

  t_cls is the annotator's crop label (TokenLabelTargets.cls), mixed as lam' t + (1 - lam') t[::-1] with
  lam' = 1 - box area / tokens; token targets are not mixed, because DenseOutput.token_logits are already
  swapped back to their source image. Given (B, C) soft image labels instead of TokenLabelTargets, every
  token is trained on its image's label (the official path without dense score maps). dense_weight 0.5
  follows the paper (the official main.py default is 1.0).
  """
  dense_weight: float = 0.5
  cls_weight: float = 1.0

  def __call__(self, output: DenseOutput,
               targets: Union[TokenLabelTargets, jax.Array]) -> jax.Array:
    return jnp.mean(self.per_example(output, targets))

  def per_example(self, output: DenseOutput,
                  targets: Union[TokenLabelTargets, jax.Array]) -> jax.Array:
    """(B,): each example's weighted class-token CE plus its mean token CE (their batch mean is
    the loss)."""
    batch, tokens, classes = output.token_logits.shape
    if isinstance(targets, TokenLabelTargets):
      cls_target, dense_target = targets.cls, targets.dense
    else:
      cls_target = targets
      dense_target = jnp.broadcast_to(targets[:, None, :], (batch, tokens, classes))
    if dense_target.shape != output.token_logits.shape:
      raise ValueError(
          f"dense targets {dense_target.shape} do not match the token logits "
          f"{output.token_logits.shape}; build the targets with label_size = the token grid side "
          f"({math.isqrt(tokens)})")
    lam = mixtoken_lam(output.mix_box, tokens)
    cls_target = lam * cls_target + (1.0 - lam) * cls_target[::-1]
    loss_cls = soft_cross_entropy(output.cls_logits, cls_target)
    loss_dense = jnp.mean(soft_cross_entropy(output.token_logits, dense_target), axis=-1)
    return self.cls_weight * loss_cls + self.dense_weight * loss_dense


@register_dense_loss("token_label")
def token_label_loss(output: DenseOutput, batch: dict[str, jax.Array], *, label_smoothing: float,
                     dense_weight: float = 0.5, cls_weight: float = 1.0,
                     official_box_order: bool = True) -> jax.Array:
  """(B,) token-labeling loss of a training batch: targets from its score maps and crops
  (token_label_targets, on a grid of the model's token grid side), then TokenLabelCrossEntropy."""
  missing = [key for key in (SCORE_VALUES, SCORE_INDICES, CROP) if key not in batch]
  if missing:
    raise ValueError(
        f"config.loss='token_label' needs score maps in the train batch, which has no {missing}: "
        "annotate the train split with a teacher (python -m vit_jax.token_labels) and set "
        "config.data.score_maps to their directory")
  _, tokens, num_classes = output.token_logits.shape
  label_size = math.isqrt(tokens)
  if label_size * label_size != tokens:
    raise ValueError(f"token labeling needs a square token grid, got {tokens} tokens")
  maps = ScoreMaps(values=batch[SCORE_VALUES], indices=batch[SCORE_INDICES], crop=batch[CROP],
                   ground_truth=batch["label"], warp=batch.get(WARP))
  targets = token_label_targets(maps, num_classes=num_classes, label_size=label_size,
                                smoothing=label_smoothing, official_box_order=official_box_order)
  return TokenLabelCrossEntropy(dense_weight=dense_weight, cls_weight=cls_weight).per_example(
      output, targets)
