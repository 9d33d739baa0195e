"""Bad data: undecodable examples are skipped and counted; unreadable shards fail, named.

The decoding ops of a pipeline run guarded: an example whose bytes fail to decode (corrupt,
truncated, not an image) becomes a placeholder flagged not-ok instead of an error. At the batch
level a train batch refills its not-ok slots with copies of readable examples of the same batch
(batches stay full and the stream stays a pure function of (seed, step)); an eval batch masks them.
`Batches` hands the numpy batches to the trainer, logs each skipped example with the file or record
it came from, keeps the count, and turns read errors into messages that name the unreadable shard.
"""
import logging
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import tensorflow as tf

OK, KEY, BAD_KEYS = "_ok", "key", "_bad_keys"  # KEY: the source's key of each example.
_MAX_LOGGED = 100  # Skips logged one by one; after that every 1000th.


def placeholder(spec) -> tf.Tensor:
  """A small all-zeros tensor with the spec's dtype and rank (1 for each unknown dimension)."""
  shape = [1 if d is None else d for d in spec.shape]
  if spec.dtype == tf.string:
    return tf.fill(shape, "")
  return tf.zeros(shape, spec.dtype)


def guarded_map(ds: tf.data.Dataset, fn: Callable, *, parallelism: int) -> tf.data.Dataset:
  """ds.map(fn) where an element on which fn raises becomes a placeholder with OK False.

  Elements are dicts with a KEY, kept in the output; fn maps an element to a dict. Each element
  runs in its own tiny dataset whose errors are dropped, followed by the placeholder: the first of
  the two is kept. Order is preserved; `parallelism` elements are processed at once.
  """
  out_spec = ds.map(fn).element_spec

  def one(element):
    good = tf.data.Dataset.from_tensors(element).map(
        lambda e: {**fn(e), KEY: e[KEY], OK: tf.constant(True)}).ignore_errors()
    bad = {k: placeholder(s) for k, s in out_spec.items()}
    bad.update({KEY: element[KEY], OK: tf.constant(False)})
    return good.concatenate(tf.data.Dataset.from_tensors(bad)).take(1)

  if parallelism <= 1:
    return ds.flat_map(one)
  return ds.interleave(one, cycle_length=parallelism, block_length=1,
                       num_parallel_calls=parallelism, deterministic=True)


def unless_bad(fn: Callable, ds_for_spec: tf.data.Dataset) -> Callable:
  """fn for readable elements; for placeholders (OK False) zeros of fn's output spec instead."""
  out_spec = ds_for_spec.map(fn).element_spec

  def apply(element):
    def skip():
      out = {k: placeholder(s) for k, s in out_spec.items()}
      out.update({KEY: element[KEY], OK: element[OK]})
      return out
    return tf.cond(element[OK], lambda: {**fn(element), KEY: element[KEY], OK: element[OK]}, skip)
  return apply


def batch_examples(ds: tf.data.Dataset, size: int,
                   drop_remainder: bool = False) -> tf.data.Dataset:
  """ds.batch, also when the images' static shape is unknown and some are placeholders.

  Then the batch is padded to its largest image (so a placeholder fits) and every readable image
  must have that shape: images of different sizes are an error asking for a resize.
  """
  if ds.element_spec["image"].shape.is_fully_defined():
    return ds.batch(size, drop_remainder=drop_remainder)

  def check(b):
    shapes = b.pop("_shape")
    largest = tf.reduce_max(shapes, axis=0)
    readable = b[OK] if OK in b else tf.ones(tf.shape(shapes)[:1], tf.bool)
    if "mask" in b:  # Eval padding may be smaller too.
      readable &= b["mask"] > 0
    same = tf.reduce_all(tf.equal(shapes, largest) | ~readable[:, None])
    assert_same = tf.debugging.Assert(same, [
        "images of different sizes in one batch; add resize(...) or a crop to the pipeline. "
        "Shapes:", shapes])
    with tf.control_dependencies([assert_same]):
      return {**b, "image": tf.identity(b["image"])}

  ds = ds.map(lambda ex: {**ex, "_shape": tf.shape(ex["image"])})
  return ds.padded_batch(size, drop_remainder=drop_remainder).map(check)


def refill_bad_slots(batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Replaces the not-ok examples of a train batch by copies of its readable ones (in turn).

  Adds BAD_KEYS (the keys of the replaced examples) and drops OK and KEY. A batch without any
  readable example is left as it is (Batches then raises).
  """
  ok = batch.pop(OK)
  keys = batch.pop(KEY)
  good = tf.cast(tf.where(ok)[:, 0], tf.int32)
  num_good = tf.size(good)
  size = tf.size(ok)

  def refill():
    bad_rank = tf.cumsum(tf.cast(~ok, tf.int32)) - 1
    source = tf.where(ok, tf.range(size), tf.gather(good, tf.maximum(bad_rank, 0) % num_good))
    return {k: tf.gather(v, source) for k, v in batch.items()}

  out = tf.cond((num_good > 0) & (num_good < size), refill, lambda: dict(batch))
  out[BAD_KEYS] = tf.boolean_mask(keys, ~ok)
  return out


def mask_bad_slots(batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Eval: sets 'mask' to 0 on not-ok examples; adds BAD_KEYS; drops OK and KEY."""
  ok = batch.pop(OK)
  keys = batch.pop(KEY)
  batch["mask"] = batch["mask"] * tf.cast(ok, batch["mask"].dtype)
  batch[BAD_KEYS] = tf.boolean_mask(keys, ~ok & (keys != ""))
  return batch


class Batches(Iterator[Dict[str, np.ndarray]]):
  """The pipeline's numpy batches, with skipped examples logged and counted.

  Attributes:
    skipped: number of examples skipped so far because they could not be decoded.
    skipped_keys: the first 1000 of their keys (file or record names).
  """

  def __init__(self, ds: tf.data.Dataset, *, what: str, files: List[str], train: bool,
               then: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None):
    self._it = ds.as_numpy_iterator()
    self._then = then  # applied last to every batch (e.g. joining the batch with its score maps)
    self._what, self._files, self._train = what, files, train
    self.skipped, self.skipped_keys = 0, []
    self.readable = 0

  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    try:
      batch = next(self._it)
    except StopIteration:
      if not self._train and self.readable == 0 and self.skipped:
        raise ValueError(f"{self._what}: none of its {self.skipped} examples could be decoded "
                         f"(first: {self.skipped_keys[:3]}); the data is unreadable.") from None
      raise
    except tf.errors.OpError as e:
      raise self._read_error(e) from e
    bad = [k.decode("utf-8", "replace") for k in batch.pop(BAD_KEYS, [])]
    for key in bad:
      self.skipped += 1
      if len(self.skipped_keys) < 1000:
        self.skipped_keys.append(key)
      if self.skipped <= _MAX_LOGGED or self.skipped % 1000 == 0:
        logging.warning("Skipped undecodable example %s of %s (%d skipped so far).", key,
                        self._what, self.skipped)
    size = len(next(iter(batch.values())))
    if self._train and len(bad) == size:
      raise ValueError(f"{self._what}: all {size} examples of a batch failed to decode "
                       f"(e.g. {bad[:3]}): the data is unreadable, or the pipeline's decode op "
                       "does not fit it.")
    self.readable += int(batch["mask"].sum()) if "mask" in batch else size - len(bad)
    return self._then(batch) if self._then else batch

  def _read_error(self, error: tf.errors.OpError) -> Exception:
    """A clear error for a failed read: names the unreadable shard when one can be found."""
    corrupt = isinstance(error, (tf.errors.DataLossError, tf.errors.NotFoundError))
    bad = find_unreadable_file(self._files) if corrupt else None  # Scans this process's files.
    detail = error.message.strip().splitlines()[0][:500]
    if bad is not None:
      path, reason = bad
      return IOError(f"Cannot read {self._what}: shard {path} is unreadable ({reason}). Restore or "
                     f"rewrite that file. (TensorFlow said: {detail})")
    return RuntimeError(f"Reading or preprocessing {self._what} failed: {detail}")


def find_unreadable_file(paths: List[str]) -> Optional[tuple]:
  """(path, reason) of the first record file that cannot be read to its end, or None."""
  for path in paths:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.OpError as e:
      return path, f"{type(e).__name__}: {e.message.strip().splitlines()[0][:200]}"
  return None
