"""Batch-level mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019) with stateless seeds.

Each example is mixed with the example at the mirrored position of the batch (i with B - 1 - i),
with one mixing ratio per batch drawn from Beta(alpha, alpha). The pipeline seeds them from
(seed, step), so a resumed run mixes exactly as the uninterrupted one. Labels must already be
float targets (onehot or multi_hot in the example pipeline); they are mixed with the same ratio.
mixup_or_cutmix applies one of the two per batch, as the DeiT-style recipes do
(docs/recipes.md#mixup-cutmix).
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


def check_mixup_or_cutmix(mixup_alpha: float, cutmix_alpha: float, switch_prob: float) -> None:
  """Refuses arguments of mixup_or_cutmix that would leave one branch undefined or never taken."""
  if mixup_alpha <= 0 or cutmix_alpha <= 0:
    raise ValueError(f"mixup_or_cutmix needs mixup_alpha > 0 and cutmix_alpha > 0, got "
                     f"{mixup_alpha} and {cutmix_alpha}: for one of the two, use mixup(alpha) or "
                     "cutmix(alpha) alone.")
  if not 0 <= switch_prob <= 1:
    raise ValueError(f"mixup_or_cutmix's switch_prob={switch_prob} is the probability of cutmix: "
                     "give a number in [0, 1].")


def choose_cutmix(switch_prob: float, seed) -> Tuple[tf.Tensor, tf.Tensor]:
  """(whether this batch gets cutmix, the seed of the chosen op) for mixup_or_cutmix.

  Cutmix is chosen when a uniform draw in [0, 1) is below switch_prob, so 0 never and 1 always.
  """
  choice_seed, op_seed = tf.unstack(
      tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
  return tf.random.stateless_uniform([], choice_seed) < switch_prob, op_seed


def mixup_or_cutmix(batch: Batch, mixup_alpha: float, cutmix_alpha: float,
                    switch_prob: float = 0.5, *, seed) -> Batch:
  """Cutmix (probability switch_prob) or else mixup of the batch, never both, as timm's
  Mixup(mode='batch'): the chosen op is exactly cutmix or mixup called with choose_cutmix's seed."""
  check_mixup_or_cutmix(mixup_alpha, cutmix_alpha, switch_prob)
  _check_labels(batch["label"], "mixup_or_cutmix")
  use_cutmix, op_seed = choose_cutmix(switch_prob, seed)
  # Both branches see float32 images, so they return the same dtypes (mixup casts, cutmix keeps).
  pair = {"image": tf.cast(batch["image"], tf.float32), "label": batch["label"]}
  mixed = tf.cond(use_cutmix, lambda: cutmix(pair, cutmix_alpha, seed=op_seed),
                  lambda: mixup(pair, mixup_alpha, seed=op_seed))
  return {**batch, **mixed}
