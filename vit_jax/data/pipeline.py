"""Per-process batching: infinite, resumable train batches and one padded, masked eval pass.

Each process reads its own shard of the source (`process_index` of `process_count`) and yields
process-local numpy batches; the trainer assembles global arrays from them. The train stream is a
pure function of (seed, step), so a checkpoint only needs the step to resume it exactly.
"""
from typing import Dict, Iterator, Optional

import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax.data import preprocess
from vit_jax.data.sources import Source, get_source

Batch = Dict[str, np.ndarray]
CROPS = ("inception", "resize")
_SHUFFLE_SALT = 0x5EED5  # Keeps the shuffle order and the augmentation draws independent.
_AUGMENT_SALT = 0xA46


def default_augment_config() -> ml_collections.ConfigDict:
  """Returns the train augmentation config: inception crop and random horizontal flip."""
  return ml_collections.ConfigDict({"crop": "inception", "area_min": 0.05, "flip": True})


def local_batch_size(batch_size: int, process_count: int = 1) -> int:
  """Returns the per-process share of a global batch; the batch must split evenly."""
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f"Global batch_size={batch_size} must be a positive multiple of "
                     f"process_count={process_count}: change the batch size.")
  return batch_size // process_count


def steps_per_epoch(num_examples: int, batch_size: int, process_count: int = 1) -> int:
  """Returns the number of full train batches per epoch, the same on every process."""
  # Shards differ in size by at most one; every process uses the smallest, so all step together.
  return (num_examples // process_count) // local_batch_size(batch_size, process_count)


def eval_steps(num_examples: int, batch_size: int, process_count: int = 1) -> int:
  """Returns the number of (padded) eval batches covering every example once, on every process."""
  largest_shard = -(-num_examples // process_count)
  return -(-largest_shard // local_batch_size(batch_size, process_count))


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must lie in [0, process_count={process_count}).")


def _options(data_config: ml_collections.ConfigDict) -> tf.data.Options:
  """tf.data options for a small host: a private pool of `threads` leaves XLA the cores."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = data_config.threads
  options.threading.max_intra_op_parallelism = 1
  return options


def _epoch_seed(seed: int, salt: int, epoch) -> tf.Tensor:
  """A stateless shape-[2] seed for one epoch, derived from (seed, salt, epoch)."""
  return tf.random.experimental.stateless_fold_in(
      tf.constant([seed, salt], tf.int64), tf.cast(epoch, tf.int64))


def _augment_fn(augment: ml_collections.ConfigDict, image_size: int):
  """Returns (aug_seed, example) -> {'image': float32 [-1, 1], 'label'} for the train stream."""
  if augment.crop not in CROPS:
    raise ValueError(f"Unknown augment.crop {augment.crop!r}: use one of {CROPS}.")
  if not 0.0 < augment.area_min <= 1.0:
    raise ValueError(f"augment.area_min={augment.area_min} must lie in (0, 1].")

  def fn(aug_seed, example):
    # Seeds come from (seed, epoch, global example index): independent of the process count.
    example_seed = tf.random.experimental.stateless_fold_in(aug_seed, example["index"])
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
    image = example["image"]
    if augment.crop == "inception":
      image = preprocess.inception_crop(image, image_size, (augment.area_min, 1.0), seed=crop_seed)
    else:
      image = preprocess.resize(image, image_size)
    if augment.flip:
      image = preprocess.flip_lr(image, flip_seed)
    return {"image": preprocess.value_range(image), "label": example["label"]}

  return fn


def train_batches(data_config: ml_collections.ConfigDict, *, source: Optional[Source] = None,
                  batch_size: int, image_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  augment: Optional[ml_collections.ConfigDict] = None) -> Iterator[Batch]:
  """Yields this process's share of train batches `start_step`, `start_step + 1`, ... forever.

  Each epoch reshuffles this process's shard with a seed derived from (seed, epoch) and drops the
  last partial batch; resuming at `start_step=k` skips only within epoch k // steps_per_epoch.
  (tf.data's shuffle also reads TF's global seed: leave tf.random.set_seed alone, or set it the
  same in every run.)

  Args:
    data_config: see sources.default_data_config (reads train_split, shuffle_buffer, threads,
      prefetch, and the source keys when `source` is None).
    source: the examples; None builds one from data_config.
    batch_size: global batch size, split evenly over processes.
    image_size: output side length.
    seed: the stream's seed.
    start_step: index of the first batch to yield.
    process_index: this process's index.
    process_count: number of processes reading the stream.
    augment: crop ('inception' | 'resize'), area_min, flip; None: default_augment_config().

  Returns:
    An iterator of {'image': float32 (local_batch, size, size, 3) in [-1, 1], 'label': int32}.
  """
  source = source if source is not None else get_source(data_config)
  augment = augment if augment is not None else default_augment_config()
  _check_process(process_index, process_count)
  local_batch = local_batch_size(batch_size, process_count)
  split = data_config.train_split
  num_examples = source.num_examples(split)
  steps = steps_per_epoch(num_examples, batch_size, process_count)
  if steps == 0:
    raise ValueError(f"Split {split!r} has {num_examples} examples, fewer than one global batch of "
                     f"{batch_size} (over {process_count} processes): lower the batch size.")
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  first_epoch, offset = divmod(start_step, steps)

  # Tag each example with its index in the whole split: shard i of n holds i, i + n, i + 2n, ...
  examples = source.read(split, process_index, process_count).enumerate().map(
      lambda i, ex: {**ex, "index": i * process_count + process_index})
  buffer_size = max(1, min(data_config.shuffle_buffer, num_examples // process_count + 1))

  def epoch(e):
    shuffle_seed = tf.random.stateless_uniform(  # A scalar mixing both halves of the pair.
        [], seed=_epoch_seed(seed, _SHUFFLE_SALT, e), minval=None, maxval=None, dtype=tf.int64)
    aug_seed = _epoch_seed(seed, _AUGMENT_SALT, e)
    ds = examples.shuffle(buffer_size, seed=shuffle_seed, reshuffle_each_iteration=False)
    return ds.take(steps * local_batch).map(lambda ex: (aug_seed, ex))

  later = tf.data.Dataset.range(first_epoch + 1, np.iinfo(np.int64).max).flat_map(epoch)
  ds = epoch(first_epoch).skip(offset * local_batch).concatenate(later)
  ds = ds.map(_augment_fn(augment, image_size), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(data_config.prefetch)
  return ds.with_options(_options(data_config)).as_numpy_iterator()


def eval_batches(data_config: ml_collections.ConfigDict, *, source: Optional[Source] = None,
                 split: Optional[str] = None, batch_size: int, image_size: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Yields one pass over this process's shard of `split`, resized, padded to full batches.

  Every example appears exactly once over all processes; all processes yield the same number of
  batches (eval_steps), and each batch carries 'mask' (float32: 1 real example, 0 padding).

  Args:
    data_config: see sources.default_data_config (reads test_split, threads, prefetch).
    source: the examples; None builds one from data_config.
    split: split to read; None: data_config.test_split.
    batch_size: global batch size, split evenly over processes.
    image_size: output side length.
    process_index: this process's index.
    process_count: number of processes reading the split.

  Returns:
    An iterator of {'image': float32 (local_batch, size, size, 3), 'label': int32, 'mask': float32}.
  """
  source = source if source is not None else get_source(data_config)
  split = split if split is not None else data_config.test_split
  _check_process(process_index, process_count)
  local_batch = local_batch_size(batch_size, process_count)
  num_examples = source.num_examples(split)
  local_count = len(range(process_index, num_examples, process_count))
  num_padding = eval_steps(num_examples, batch_size, process_count) * local_batch - local_count

  def prepare(example):
    image = preprocess.value_range(preprocess.resize(example["image"], image_size))
    return {"image": image, "label": example["label"], "mask": tf.constant(1.0, tf.float32)}

  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([image_size, image_size, 3], tf.float32),
      "label": tf.constant(0, tf.int32), "mask": tf.constant(0.0, tf.float32)}).repeat(num_padding)
  ds = source.read(split, process_index, process_count)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).concatenate(padding)
  ds = ds.batch(local_batch).prefetch(data_config.prefetch)
  return ds.with_options(_options(data_config)).as_numpy_iterator()
