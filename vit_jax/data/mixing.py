"""Batch-level mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019) with stateless seeds.

Each example is mixed with the example at the mirrored position of the batch (i with B - 1 - i),
with one mixing ratio per batch drawn from Beta(alpha, alpha). The pipeline seeds them from
(seed, step), so a resumed run mixes exactly as the uninterrupted one. Labels must already be
float targets (onehot or multi_hot in the example pipeline); they are mixed with the same ratio.
"""
from typing import Dict, Tuple

import tensorflow as tf

Batch = Dict[str, tf.Tensor]


def sample_beta(alpha: float, seed) -> tf.Tensor:
  """A float32 scalar from Beta(alpha, alpha), as a ratio of two stateless Gamma draws."""
  if alpha <= 0:
    raise ValueError(f"alpha={alpha} must be > 0.")
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
  a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
  b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
  return a / tf.maximum(a + b, 1e-12)


def _check_labels(labels: tf.Tensor, op: str) -> None:
  if not labels.dtype.is_floating or labels.shape.rank != 2:
    raise ValueError(f"{op} needs float (batch, classes) targets, got {labels.dtype} of rank "
                     f"{labels.shape.rank}: add onehot (or multi_hot) to the example pipeline.")


def mix(images: tf.Tensor, labels: tf.Tensor, ratio) -> Tuple[tf.Tensor, tf.Tensor]:
  """ratio * x + (1 - ratio) * mirrored x, for float images (B, H, W, C) and targets (B, K)."""
  ratio = tf.cast(ratio, images.dtype)
  mixed = ratio * images + (1 - ratio) * tf.reverse(images, [0])
  label_ratio = tf.cast(ratio, labels.dtype)
  return mixed, label_ratio * labels + (1 - label_ratio) * tf.reverse(labels, [0])


def mixup(batch: Batch, alpha: float, *, seed) -> Batch:
  """Mixup of batch['image'] and batch['label'] with ratio ~ Beta(alpha, alpha)."""
  _check_labels(batch["label"], "mixup")
  images, labels = mix(tf.cast(batch["image"], tf.float32), batch["label"],
                       sample_beta(alpha, seed))
  return {**batch, "image": images, "label": labels}


def cutmix_box(height, width, ratio, seed) -> tf.Tensor:
  """[top, left, box_height, box_width] of a box covering about 1 - ratio of the image.

  The box has sides sqrt(1 - ratio) * (H, W), a uniformly drawn centre, and is clipped to the image
  (so it may cover less); the caller mixes labels by the area it really covers.
  """
  size = tf.cast(tf.stack([height, width]), tf.float32)
  box = tf.cast(tf.round(size * tf.sqrt(1.0 - tf.cast(ratio, tf.float32))), tf.int32)
  centre = tf.cast(tf.floor(tf.random.stateless_uniform([2], seed) * size), tf.int32)
  start = tf.clip_by_value(centre - box // 2, 0, tf.cast(size, tf.int32))
  end = tf.clip_by_value(centre - box // 2 + box, 0, tf.cast(size, tf.int32))
  return tf.concat([start, end - start], axis=0)


def paste(images: tf.Tensor, labels: tf.Tensor, box) -> Tuple[tf.Tensor, tf.Tensor]:
  """Pastes the box of the mirrored batch into each image; labels mixed by the pasted area."""
  shape = tf.shape(images)
  rows = tf.range(shape[1])[:, None]
  cols = tf.range(shape[2])[None, :]
  inside = ((rows >= box[0]) & (rows < box[0] + box[2]) &
            (cols >= box[1]) & (cols < box[1] + box[3]))
  mixed = tf.where(inside[None, :, :, None], tf.reverse(images, [0]), images)
  pasted = tf.cast(box[2] * box[3], tf.float32) / tf.cast(shape[1] * shape[2], tf.float32)
  ratio = tf.cast(1.0 - pasted, labels.dtype)
  return mixed, ratio * labels + (1 - ratio) * tf.reverse(labels, [0])


def cutmix(batch: Batch, alpha: float, *, seed) -> Batch:
  """Cutmix of batch['image'] and batch['label'] with ratio ~ Beta(alpha, alpha)."""
  _check_labels(batch["label"], "cutmix")
  ratio_seed, box_seed = tf.unstack(
      tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
  shape = tf.shape(batch["image"])
  box = cutmix_box(shape[1], shape[2], sample_beta(alpha, ratio_seed), box_seed)
  images, labels = paste(batch["image"], batch["label"], box)
  return {**batch, "image": images, "label": labels}
