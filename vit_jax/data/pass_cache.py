"""One pass of evaluation batches kept in host memory, so that later passes skip the input pipeline.

An evaluator reads the same split, preprocessed the same way, at every evaluation of a run (and once
more for EMA weights). Where a pass's batches fit in `limit_bytes`, the first pass keeps them as it
yields them, and later passes replay them: no tf.data pipeline is built and nothing is decoded
again. For a small split at a small resolution that is most of what an evaluation costs
(experiments/README.md, "Overheads around the step"). A pass that outgrows the limit is dropped at
once and every pass streams, as without a cache. Eval pipelines are deterministic (their random ops
have a fixed seed), so a replayed pass holds what a fresh one would.

Contract: `make_pass()` returns an iterable of batches ({name: numpy array}) that may carry
`skipped` (examples the pipeline could not decode, read after the pass); a pass from the cache
carries the first pass's `skipped`. Only a pass iterated to its end is kept.
"""
from typing import Callable, Iterable, Iterator, Optional

Batch = dict


def batch_bytes(batch: Batch) -> int:
  """Host bytes held by one batch's arrays."""
  return sum(getattr(value, "nbytes", 0) for value in batch.values())


class PassCache:
  """Calling it gives one pass over the batches of `make_pass`, from memory once a pass fits."""

  def __init__(self, make_pass: Callable[[], Iterable[Batch]], limit_bytes: int):
    if limit_bytes < 0:
      raise ValueError(f"a pass cache's limit is a number of bytes >= 0 (0: never keep), got "
                       f"{limit_bytes}")
    self._make_pass = make_pass
    self.limit_bytes = limit_bytes
    self._kept: Optional[list[Batch]] = None
    self._skipped = 0
    self.streams = limit_bytes == 0  # True once a pass did not fit: never try again.

  @property
  def cached(self) -> bool:
    """Whether the next pass comes from memory."""
    return self._kept is not None

  def __call__(self) -> Iterable[Batch]:
    if self._kept is not None:
      return _Replay(self._kept, self._skipped)
    if self.streams:
      return self._make_pass()
    return _Recording(self, self._make_pass())

  def _keep(self, batches: list[Batch], skipped: int) -> None:
    self._kept, self._skipped = batches, skipped


class _Replay:
  """A pass from memory, with the first pass's count of skipped examples."""

  def __init__(self, batches: list[Batch], skipped: int):
    self._batches, self.skipped = batches, skipped

  def __iter__(self) -> Iterator[Batch]:
    return iter(self._batches)


class _Recording:
  """The first pass: yields the pipeline's batches and keeps them while they fit."""

  def __init__(self, cache: PassCache, batches: Iterable[Batch]):
    self._cache, self._batches = cache, batches

  @property
  def skipped(self) -> int:
    return getattr(self._batches, "skipped", 0)

  def __iter__(self) -> Iterator[Batch]:
    kept: Optional[list[Batch]] = []
    size = 0
    for batch in self._batches:
      if kept is not None:
        size += batch_bytes(batch)
        if size > self._cache.limit_bytes:
          kept, self._cache.streams = None, True  # Too large: drop what was kept, stream.
        else:
          kept.append(batch)
      yield batch
    if kept is not None:
      self._cache._keep(kept, self.skipped)  # pylint: disable=protected-access
