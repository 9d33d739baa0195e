"""Specification of masked patch prediction's corruption: half of each image's patch embeddings,
of those 80% the [mask] embedding, 10% another patch of the same image, 10% unchanged."""
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models.masked_patches import corrupt_patches, corrupted_count

BATCH, TOKENS, DIM = 64, 256, 4  # 16,384 patches, 8,192 corrupted: shares within 0.02 (> 4 sigma)


@jax.jit
def _corrupt(seed):
  embeddings = jax.random.normal(jax.random.key(0), (BATCH, TOKENS, DIM))
  mask_embedding = jnp.full((DIM,), 100.0)  # equal to no patch embedding
  return (embeddings,) + tuple(corrupt_patches(jax.random.key(seed), embeddings, mask_embedding))


def corrupt_random_patches(seed=0):
  """(embeddings, corrupted embeddings, which are corrupted) as numpy; one program for every seed."""
  return tuple(np.asarray(x) for x in _corrupt(seed))


def test_exactly_half_of_every_images_patches_are_corrupted_and_the_others_kept():
  embeddings, out, corrupted = corrupt_random_patches()
  np.testing.assert_array_equal(corrupted.sum(axis=1), TOKENS // 2)
  np.testing.assert_array_equal(out[~corrupted], embeddings[~corrupted])
  per_position = corrupted.sum(axis=0)  # a uniform choice: each position in about half the images
  assert 14 < per_position.min() and per_position.max() < 50


def test_corrupted_patches_are_80_percent_mask_10_percent_another_patch_10_percent_unchanged():
  embeddings, out, corrupted = corrupt_random_patches()
  masked = np.all(out == 100.0, axis=-1) & corrupted
  kept = np.all(out == embeddings, axis=-1) & corrupted
  replaced = corrupted & ~masked & ~kept
  total = corrupted.sum()
  assert abs(masked.sum() / total - 0.8) < 0.02
  assert abs(replaced.sum() / total - 0.1) < 0.02
  assert abs(kept.sum() / total - 0.1) < 0.02
  for b, n in zip(*np.nonzero(replaced)):  # the original embedding of another patch of its image
    sources = np.nonzero(np.all(embeddings[b] == out[b, n], axis=-1))[0]
    assert len(sources) == 1 and sources[0] != n


def test_the_draw_follows_the_key():
  _, out, corrupted = corrupt_random_patches(seed=3)
  _, again, _ = corrupt_random_patches(seed=3)
  _, _, other = corrupt_random_patches(seed=4)
  np.testing.assert_array_equal(out, again)
  assert np.any(corrupted != other)


def test_half_of_an_odd_count_rounds_up_and_every_image_has_a_corrupted_patch():
  assert [corrupted_count(n) for n in (1, 2, 5, 16, 196)] == [1, 1, 3, 8, 98]
