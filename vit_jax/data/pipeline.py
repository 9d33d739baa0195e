"""Per-process batching: infinite, resumable train batches and one padded, masked eval pass.

Each process reads its own shard of the source (`process_index` of `process_count`) and yields
process-local numpy batches; the trainer assembles global arrays from them (parallel.global_batch).
With `data.global_order` every process instead reads the whole train split in one global order and
keeps its slice of each global batch, so the global batches do not depend on the number of
processes (at the cost of reading, not decoding, every example on every host). The train stream is
a pure function of (seed, step), mixup and cutmix (and mixup_or_cutmix's choice) included, so a
checkpoint only needs the step to resume it exactly. Examples are shuffled while still encoded and
decoded afterwards by the pipeline string (see pp.py); undecodable examples are skipped and counted
(see guard.py).
"""
import dataclasses
import math
from typing import Optional

import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax import paths
from vit_jax.data import batch_keys, geometry, guard, pp, score_maps
from vit_jax.data.guard import Batches
from vit_jax.data.source import source_name
from vit_jax.data.sources import Source, get_source

CROPS = ("inception", "resize")
_SHUFFLE_SALT = 0x5EED5  # Keeps the shuffle order and the augmentation draws independent.
_AUGMENT_SALT = 0xA46
_MIX_SALT = 0x313C
_EVAL_SALT = 0xE7A1
EXAMPLE_KEY = batch_keys.EXAMPLE_KEY  # Batches with keys=True: each example's key in its source.
INDEX = "index"  # Eval batches with indices=True: each example's position in the split (-1: padding).
_SEED = "_seed"  # Per-example seed, carried from the decoding ops to the rest of the pipeline.


def default_pp_train(augment: ml_collections.ConfigDict, image_size: int,
                     multi_label: bool = False) -> str:
  """The train pipeline string that config.data.augment stands for (when data.pp_train is empty)."""
  if augment.crop not in CROPS:
    raise ValueError(f"Unknown augment.crop {augment.crop!r}: use one of {CROPS}.")
  if not 0.0 < augment.area_min <= 1.0:
    raise ValueError(f"augment.area_min={augment.area_min} must lie in (0, 1].")
  crop = (f"inception_crop({image_size}, area_min={augment.area_min})"
          if augment.crop == "inception" else f"resize({image_size})")
  return "|".join(["decode", crop] + ["flip_lr"] * bool(augment.flip) + ["value_range(-1, 1)"] +
                  ["multi_hot"] * multi_label)


def default_pp_eval(image_size: int, multi_label: bool = False) -> str:
  """The eval pipeline string used when data.pp_eval is empty: resize the whole image."""
  return f"decode|resize({image_size})|value_range(-1, 1)" + "|multi_hot" * multi_label


def local_batch_size(batch_size: int, process_count: int = 1) -> int:
  """Returns the per-process share of a global batch; the batch must split evenly."""
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f"Global batch_size={batch_size} must be a positive multiple of "
                     f"process_count={process_count}: change the batch size.")
  return batch_size // process_count


def steps_per_epoch(num_examples: int, batch_size: int, process_count: int = 1) -> int:
  """Returns the number of full train batches per epoch of evenly sharded examples."""
  return (num_examples // process_count) // local_batch_size(batch_size, process_count)


def eval_steps(num_examples: int, batch_size: int, process_count: int = 1) -> int:
  """Returns the number of (padded) eval batches covering evenly sharded examples once."""
  largest_shard = -(-num_examples // process_count)
  return -(-largest_shard // local_batch_size(batch_size, process_count))


def balanced_eval_batch_size(source: Source, split: str, batch_size: int, multiple: int,
                             process_count: int = 1) -> int:
  """The smallest global batch, a multiple of `multiple` and at most `batch_size`, that covers
  `split` in as many batches as `batch_size` does.

  The last batch of a pass is padded up to the full batch, and padding costs as much to compute as
  an example: 1,438 examples in batches of 256 pad 98 (7%); in 6 batches of 240 they pad 2. One
  shape for the whole pass, so the eval step still compiles once (per distinct split size).
  `multiple` is what the batch's sharding needs (parallel.batch_shards; a multiple of
  process_count is added).
  """
  local = local_batch_size(batch_size, process_count)
  largest = max(source.shard_size(split, i, process_count) for i in range(process_count))
  num_batches = max(1, -(-largest // local))
  step = math.lcm(multiple, process_count)
  needed = -(-largest // num_batches) * process_count
  return min(batch_size, -(-needed // step) * step)


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must lie in [0, process_count={process_count}).")


def _options(data_config: ml_collections.ConfigDict) -> tf.data.Options:
  """tf.data's threading, set deliberately: a private pool of `threads` leaves XLA the other cores.

  Parallel stages use exactly that pool (AUTOTUNE parallelism resolves to its size), and autotuning
  is off: its per-element bookkeeping cost more than a small pipeline's work.
  """
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = data_config.threads
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  return options


def _epoch_seed(seed: int, salt: int, epoch) -> tf.Tensor:
  """A stateless shape-[2] seed for one epoch, derived from (seed, salt, epoch)."""
  return tf.random.experimental.stateless_fold_in(
      tf.constant([seed, salt], tf.int64), tf.cast(epoch, tf.int64))


def _read(source: Source, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
  """This process's examples of the split, checked to carry what the pipeline needs."""
  examples = source.read(split, process_index, process_count)
  missing = {"image", "index", guard.KEY} - set(examples.element_spec)
  if missing:
    raise ValueError(f"{source.describe()}.read() gives examples without {sorted(missing)}: a "
                     "source must add 'index' and 'key' to each example (see sources.every_nth).")
  return examples


def _preprocessed(examples: tf.data.Dataset, preprocess: pp.Preprocess, source: Source,
                  data_config: ml_collections.ConfigDict, base_seed: tf.Tensor, *,
                  mask: bool = False, keys: bool = False, indices: bool = False,
                  track_geometry: bool = False) -> tf.data.Dataset:
  """Runs the pipeline string on examples, example i seeded by fold_in(base_seed, index).

  Images decoded in memory cannot fail to decode: they take one map (per-example map calls
  dominate the cost of small images) to {'image', 'label'}. Encoded images run their decoding ops
  guarded, giving {'image', 'label', guard.KEY, guard.OK}. `mask` adds 'mask' = 1; `keys` adds
  EXAMPLE_KEY, the source's key of the example; `indices` adds INDEX, its position in the split;
  `track_geometry` adds the crop box, flip and warp of the augmentation (geometry.BOX, FLIPPED, WARP).
  """
  def outputs(out, key, index):
    if "label" not in out:
      raise ValueError(f"Pipeline {preprocess.spec!r} leaves no 'label' (multi-label sources need "
                       "multi_hot to turn 'labels' into targets).")
    extra = {"mask": tf.constant(1.0, tf.float32)} if mask else {}
    if keys:
      extra[EXAMPLE_KEY] = key
    if indices:
      extra[INDEX] = tf.cast(index, tf.int64)
    if track_geometry:
      extra.update({name: out[name] for name in (geometry.BOX, geometry.FLIPPED, geometry.WARP)})
    return {"image": out["image"], "label": out["label"], **extra}

  seed_of = example_seeds(base_seed)
  if track_geometry:
    preprocess = _tracking(preprocess)

  if not _encoded(examples):
    ds = examples.map(lambda ex: outputs(preprocess(ex, seed_of(ex)), ex[guard.KEY], ex["index"]),
                      num_parallel_calls=_parallel_calls(data_config))
  else:
    if not preprocess.num_decoding_ops:
      raise ValueError(f"The source yields encoded images but pipeline {preprocess.spec!r} has no "
                       "decoding op: start it with decode.")

    def decoding(ex):
      example_seed = seed_of(ex)
      return {**preprocess.decoding_part(ex, example_seed), _SEED: example_seed}

    ds = guard.guarded_map(examples, decoding, parallelism=data_config.threads)
    rest = lambda ex: outputs(preprocess.rest(ex, ex[_SEED]), ex[guard.KEY], ex["index"])  # noqa: E731
    ds = ds.map(guard.unless_bad(rest, ds), num_parallel_calls=_parallel_calls(data_config))
  _check_output(ds.element_spec, preprocess, source)
  return ds


class _tracking:
  """A pipeline whose examples start as the whole source image, so its crop, flip and RandAugment
  ops record their geometry (geometry.start)."""

  def __init__(self, preprocess: pp.Preprocess):
    self._preprocess = preprocess
    self.spec, self.num_decoding_ops = preprocess.spec, preprocess.num_decoding_ops

  def __call__(self, example, seed=None):
    return self._preprocess(geometry.start(example), seed)

  def decoding_part(self, example, seed=None):
    return self._preprocess.decoding_part(geometry.start(example), seed)

  def rest(self, example, seed=None):
    return self._preprocess.rest(example, seed)


def _parallel_calls(data_config: ml_collections.ConfigDict) -> Optional[int]:
  """Parallel maps only with several threads: with one, their hand-offs cost without gain."""
  return tf.data.AUTOTUNE if data_config.threads > 1 else None


def example_seeds(base_seed: tf.Tensor):
  """Returns example -> stateless_fold_in(base_seed, example['index']), computed cheaply.

  fold_in(seed, i) is [uniform_int(seed), i]: the draw is made once here, so each example costs
  a stack instead of a random op (the draw dominated the cost of small in-memory images).
  """
  first = tf.random.stateless_uniform([], seed=base_seed, minval=None, maxval=None, dtype=tf.int64)
  return lambda example: tf.stack([first, tf.cast(example["index"], tf.int64)])


def _encoded(examples: tf.data.Dataset) -> bool:
  return examples.element_spec["image"].dtype == tf.string


def _check_output(spec, preprocess: pp.Preprocess, source: Source) -> None:
  image, label = spec["image"], spec["label"]
  if image.dtype == tf.string or image.shape.rank != 3:
    raise ValueError(f"Pipeline {preprocess.spec!r} must produce (H, W, C) images, got "
                     f"{image.dtype.name} of rank {image.shape.rank}.")
  if label.shape.rank == 1 and label.shape[0] is not None and label.shape[0] < source.num_classes:
    raise ValueError(f"Pipeline {preprocess.spec!r} makes {label.shape[0]}-class targets but the "
                     f"source has {source.num_classes} classes.")
  if label.shape.rank == 1 and label.dtype.is_integer:
    raise ValueError(f"Pipeline {preprocess.spec!r} leaves integer label lists: add multi_hot.")


def slices_of_global_batches(examples: tf.data.Dataset, local_batch: int, process_index: int,
                             process_count: int) -> tf.data.Dataset:
  """Keeps examples [p * local_batch, (p + 1) * local_batch) of every `process_count * local_batch`:
  process p's rows of each global batch (the rows its devices hold on a process-major mesh)."""
  def mine(position, _):
    return (position // local_batch) % process_count == process_index
  return examples.enumerate().filter(mine).map(lambda _, example: example)


def _describe(source: Source, split: str, process_index: int, process_count: int) -> str:
  return (f"{source.describe()} split {split!r}" +
          (f" (process {process_index} of {process_count})" if process_count > 1 else ""))


def train_batches(data_config: ml_collections.ConfigDict, *, source: Optional[Source] = None,
                  batch_size: int, image_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  augment: Optional[ml_collections.ConfigDict] = None) -> Batches:
  """Yields this process's share of train batches `start_step`, `start_step + 1`, ... forever.

  Each epoch reshuffles this process's shard (still encoded) with a seed derived from (seed, epoch)
  and drops the last partial batch; resuming at `start_step=k` skips encoded examples only.
  With data_config.global_order, the shard is the whole split, shuffled the same on every process,
  and the process decodes only its slice of each global batch (see slices_of_global_batches): the
  global batches are then the same for any process_count, except that the mixing ops pair
  examples, and undecodable examples are refilled, within each process's slice (the whole-batch
  inception_crop and flip_lr draw for every row of the global batch and are unaffected).
  Augmentation seeds come from (seed, epoch, example index) and batch-op seeds from (seed, step).
  (tf.data's shuffle also reads TF's global seed: leave tf.random.set_seed alone, or set it the
  same in every run.)

  Args:
    data_config: see vit_jax.configuration.data_config (reads train_split, pp_train, pp_batch,
      shuffle_buffer, global_order, threads, prefetch, and the source keys when `source` is None).
    source: the examples; None builds one from data_config.
    batch_size: global batch size, split evenly over processes.
    image_size: output side length of the default pipeline.
    seed: the stream's seed.
    start_step: index of the first batch to yield.
    process_index: this process's index.
    process_count: number of processes reading the stream.
    augment: crop ('inception' | 'resize'), area_min, flip, used when data_config.pp_train is
      empty; None: data_config.augment.

  With data_config.score_maps (a directory of a teacher's maps for this split, see
  data/score_maps.py), every batch also carries each example's map, mirrored with the image, the
  region of the source image it shows and how RandAugment warped it (batch_keys.SCORE_VALUES,
  SCORE_INDICES, CROP, WARP): the token-labeling loss's inputs (train/token_labeling.py).

  Returns:
    An iterator (guard.Batches) of {'image': float32 (local_batch, H, W, 3), 'label': int32
    (local_batch,) or float32 (local_batch, num_classes)}; its `skipped` counts undecodable examples.
  """
  source = source if source is not None else get_source(data_config)
  augment = augment if augment is not None else data_config.augment
  _check_process(process_index, process_count)
  local_batch = local_batch_size(batch_size, process_count)
  split = data_config.train_split
  # What one process reads: its own shard, `local_batch` examples a step; or, in global order, the
  # whole split, a whole global batch a step, of which it keeps (and decodes) only its slice.
  global_order = bool(data_config.global_order)
  shard, shards = (0, 1) if global_order else (process_index, process_count)
  read_per_step = batch_size if global_order else local_batch
  sizes = [source.shard_size(split, i, shards) for i in range(shards)]
  steps = min(sizes) // read_per_step  # The same on every process, so all step together.
  if steps == 0:
    raise ValueError(f"Split {split!r} has {source.num_examples(split)} examples, fewer than one "
                     f"global batch of {batch_size} (over {process_count} processes): lower the "
                     "batch size.")
  examples = _read(source, split, shard, shards)
  batch_spec = data_config.pp_batch
  spec = (data_config.pp_train or
          default_pp_train(augment, image_size, source.multi_label))
  preprocess = pp.build(spec, num_classes=source.num_classes)
  batch_ops = pp.build_batch(batch_spec, num_classes=source.num_classes)
  maps = _score_maps(data_config, source, split, spec, batch_spec)
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  first_epoch, offset = divmod(start_step, steps)
  buffer_size = max(1, min(data_config.shuffle_buffer, sizes[shard] + 1))

  def epoch(e, skip_steps=0):
    shuffle_seed = tf.random.stateless_uniform(  # A scalar mixing both halves of the pair.
        [], seed=_epoch_seed(seed, _SHUFFLE_SALT, e), minval=None, maxval=None, dtype=tf.int64)
    ds = examples.shuffle(buffer_size, seed=shuffle_seed, reshuffle_each_iteration=False)
    # Resuming skips examples before decoding.
    ds = ds.take(steps * read_per_step).skip(skip_steps * read_per_step)
    if read_per_step != local_batch:
      ds = slices_of_global_batches(ds, local_batch, process_index, process_count)
    return _preprocessed(ds, preprocess, source, data_config, _epoch_seed(seed, _AUGMENT_SALT, e),
                         keys=maps is not None, track_geometry=maps is not None)

  later = tf.data.Dataset.range(first_epoch + 1, np.iinfo(np.int64).max).flat_map(epoch)
  ds = epoch(first_epoch, offset).concatenate(later)
  guarded = _encoded(examples)
  ds = guard.batch_examples(ds, local_batch, drop_remainder=True)
  if guarded:
    ds = ds.map(guard.refill_bad_slots)
  if batch_spec:
    mix_seed = tf.constant([seed, _MIX_SALT], tf.int64)
    rows = (process_index * local_batch, batch_size)  # Where this process's batch sits.
    ds = ds.enumerate(start_step).map(lambda step, batch: batch_ops(
        batch, tf.random.experimental.stateless_fold_in(mix_seed, step), rows))
  ds = ds.prefetch(data_config.prefetch).with_options(_options(data_config))
  what = _describe(source, split, process_index, process_count) + " in global order" * global_order
  return Batches(ds, what=what, files=source.files(split, shard, shards), train=True,
                 then=None if maps is None else lambda batch: score_maps.join(batch, maps))


def _score_maps(data_config: ml_collections.ConfigDict, source: Source, split: str, spec: str,
                batch_spec: str) -> Optional[score_maps.ScoreMaps]:
  """The maps of data_config.score_maps for this split of this source, or None when it is empty."""
  if not data_config.get("score_maps", ""):
    return None
  directory = paths.expand(data_config.score_maps)
  batch_ops = [name for name, _, _ in pp.parse(batch_spec)]
  geometry.check_order([name for name, _, _ in pp.parse(spec)], batch_ops)
  mixing = pp.mixing_batch_ops(batch_spec)
  if mixing:
    raise ValueError(f"data.pp_batch={batch_spec!r} mixes images ({mixing[0]}), which their score "
                     "maps cannot follow: token labeling mixes with MixToken in the model; remove "
                     f"{mixing[0]} from data.pp_batch")
  found = score_maps.read_manifest(directory)
  wanted = dataclasses.replace(
      found, source=source_name(data_config), split=split,
      num_classes=source.num_classes, examples=source.num_examples(split))
  return score_maps.load(directory, wanted)


def eval_batches(data_config: ml_collections.ConfigDict, *, source: Optional[Source] = None,
                 split: Optional[str] = None, batch_size: int, image_size: int,
                 process_index: int = 0, process_count: int = 1, keys: bool = False,
                 indices: bool = False) -> Batches:
  """Yields one pass over this process's shard of `split`, preprocessed, padded to full batches.

  Every readable example appears exactly once over all processes; all processes yield the same
  number of batches, and each batch carries 'mask' (float32: 1 real example, 0 padding or an
  undecodable example, which is also logged and counted).

  Args:
    data_config: see vit_jax.configuration.data_config (reads test_split, pp_eval, threads, prefetch).
    source: the examples; None builds one from data_config.
    split: split to read; None: data_config.test_split.
    batch_size: global batch size, split evenly over processes.
    image_size: output side length of the default pipeline.
    process_index: this process's index.
    process_count: number of processes reading the split.
    keys: also yield EXAMPLE_KEY, each example's key in its source ('' for padding).
    indices: also yield INDEX, each example's position in the split (int64; -1 for padding), the
      same for any number of processes (what a labels file indexed by position refers to).

  Returns:
    An iterator (guard.Batches) of {'image': float32 (local_batch, H, W, 3), 'label', 'mask'}.
  """
  source = source if source is not None else get_source(data_config)
  split = split if split is not None else data_config.test_split
  _check_process(process_index, process_count)
  local_batch = local_batch_size(batch_size, process_count)
  spec = data_config.pp_eval or default_pp_eval(image_size, source.multi_label)
  preprocess = pp.build(spec, num_classes=source.num_classes)
  largest = max(source.shard_size(split, i, process_count) for i in range(process_count))
  num_batches = -(-largest // local_batch)

  examples = _read(source, split, process_index, process_count)
  eval_seed = tf.constant([0, _EVAL_SALT], tf.int64)  # For random ops in an eval pipeline.
  ds = _preprocessed(examples, preprocess, source, data_config, eval_seed, mask=True, keys=keys,
                     indices=indices)
  guarded = _encoded(examples)
  padding = {k: guard.placeholder(s) for k, s in ds.element_spec.items()}
  padding["mask"] = tf.constant(0.0, tf.float32)
  if indices:
    padding[INDEX] = tf.constant(-1, tf.int64)
  if guarded:  # Not ok, and no key: masked, never counted as skipped.
    padding.update({guard.OK: tf.constant(False), guard.KEY: tf.constant("")})
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
  ds = guard.batch_examples(ds.take(num_batches * local_batch), local_batch)
  if guarded:
    ds = ds.map(guard.mask_bad_slots)
    if indices:  # An undecodable example is not counted: its slot reads as padding.
      ds = ds.map(lambda b: {**b, INDEX: tf.where(b["mask"] > 0, b[INDEX], tf.constant(-1, tf.int64))})
  ds = ds.prefetch(data_config.prefetch).with_options(_options(data_config))
  return Batches(ds, what=_describe(source, split, process_index, process_count),
                 files=source.files(split, process_index, process_count), train=False)
