"""Specification of PassCache: the first pass that fits is kept and replayed (with its count of
skipped examples) without building another; a pass over the limit streams every time; a pass left
unfinished keeps nothing; 0 never keeps; a negative limit is refused."""
import numpy as np
import pytest

from vit_jax.data.pass_cache import PassCache, batch_bytes


class Pipeline:
  """Stands in for pipeline.eval_batches: counts the passes it builds; each pass has `skipped`."""

  def __init__(self, batches=3, rows=4, skipped=2):
    self.built, self.shape, self.skipped = 0, (batches, rows), skipped

  def __call__(self):
    self.built += 1
    pipeline = self

    class Pass:
      skipped = 0

      def __iter__(self):
        for i in range(pipeline.shape[0]):
          yield {"image": np.full((pipeline.shape[1], 2), i, np.float32),
                 "mask": np.ones(pipeline.shape[1], np.float32)}
        self.skipped = pipeline.skipped  # Known once the pass has ended, as in guard.Batches.
    return Pass()


def contents(batches):
  return [int(b["image"][0, 0]) for b in batches]


def test_a_pass_that_fits_is_replayed_from_memory_with_its_skipped_count():
  pipeline = Pipeline()
  cache = PassCache(pipeline, limit_bytes=10 ** 6)
  first = cache()
  assert contents(first) == [0, 1, 2] and first.skipped == 2 and cache.cached
  for _ in range(3):
    again = cache()
    assert contents(again) == [0, 1, 2] and again.skipped == 2
  assert pipeline.built == 1


def test_a_pass_over_the_limit_streams_every_time_and_keeps_nothing():
  pipeline = Pipeline()
  one_batch = batch_bytes(next(iter(pipeline())))
  pipeline.built = 0
  cache = PassCache(pipeline, limit_bytes=2 * one_batch)  # 3 batches do not fit
  for _ in range(3):
    assert contents(cache()) == [0, 1, 2]
  assert pipeline.built == 3 and not cache.cached and cache.streams


def test_an_unfinished_pass_keeps_nothing_and_the_next_one_is_built_afresh():
  pipeline = Pipeline()
  cache = PassCache(pipeline, limit_bytes=10 ** 6)
  next(iter(cache()))  # An evaluation that failed part-way.
  assert not cache.cached
  assert contents(cache()) == [0, 1, 2] and pipeline.built == 2 and cache.cached


def test_a_limit_of_zero_never_keeps_and_a_negative_one_is_refused():
  pipeline = Pipeline()
  cache = PassCache(pipeline, limit_bytes=0)
  for _ in range(2):
    assert contents(cache()) == [0, 1, 2]
  assert pipeline.built == 2 and not cache.cached
  with pytest.raises(ValueError, match="bytes >= 0"):
    PassCache(pipeline, limit_bytes=-1)
