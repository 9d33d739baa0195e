"""Specification of masked patch prediction's targets, loss, train step and evaluation step: each
corrupted patch is scored against the 3-bit mean colour of its pixels, the other patches not at all."""
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import parallel
from vit_jax.config_cli import load_config_file
from vit_jax.configuration import base_config
from vit_jax.models.interface import MaskedPatchOutput
from vit_jax.train import build, losses
from vit_jax.train import masked_patch as mpp

from ..states import random_state

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "masked_patch.py"


def from_unit(rgb):
  """Pixel values in [0, 1] -> the pipelines' [-1, 1]."""
  return 2.0 * np.asarray(rgb, np.float32) - 1.0


def test_targets_are_the_3_bit_mean_colour_of_each_patch_row_major():
  image = np.zeros((8, 8, 3), np.float32)  # a 2x2 grid of 4x4 patches
  image[:4, :4] = from_unit([0.0, 0.0, 0.0])     # black: (0, 0, 0)
  image[:4, 4:] = from_unit([1.0, 1.0, 1.0])     # white: (7, 7, 7), 1.0 is in the top bin
  image[4:, :4] = from_unit([0.3, 0.6, 0.9])     # floor(8 x mean): (2, 4, 7)
  image[4:, 4:] = from_unit([0.1, 0.1, 0.74])    # (0, 0, 5) ...
  image[4:, 4:, 0] = from_unit(np.indices((4, 4)).sum(axis=0) % 2)  # ... red a checkerboard: mean
  classes = mpp.mean_colour_classes(jnp.asarray(image[None]), grid=2)  # 0.5, on an edge: bin 4
  np.testing.assert_array_equal(classes, [[0, 7 * 64 + 7 * 8 + 7, 2 * 64 + 4 * 8 + 7, 4 * 64 + 5]])


def mpp_output(seed=0, batch=2, tokens=4):
  rng = np.random.default_rng(seed)
  corrupted = np.zeros((batch, tokens), bool)
  corrupted[:, : tokens // 2] = True
  return MaskedPatchOutput(
      cls_logits=jnp.zeros((batch, 10)),
      patch_logits=jnp.asarray(rng.normal(size=(batch, tokens, 512)), jnp.float32),
      corrupted=jnp.asarray(corrupted))


def test_the_loss_is_the_mean_cross_entropy_of_the_corrupted_patches_only():
  output = mpp_output()
  images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
  targets = np.asarray(mpp.mean_colour_classes(images, 2))
  log_probs = np.asarray(jax.nn.log_softmax(output.patch_logits))
  expected = -np.mean(np.take_along_axis(log_probs[:, :2], targets[:, :2, None], axis=-1)[..., 0],
                      axis=1)
  loss = losses.get_loss("masked_patch")(output, {"image": images}, label_smoothing=0.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  changed = output._replace(patch_logits=output.patch_logits.at[:, 2:].set(5.0))  # not corrupted
  np.testing.assert_array_equal(
      losses.get_loss("masked_patch")(changed, {"image": images}, label_smoothing=0.0), loss)
  right = output._replace(patch_logits=jax.nn.one_hot(targets, 512) * 50.0)
  np.testing.assert_array_equal(mpp.masked_patch_hits(right, {"image": images}), [1.0, 1.0])


def mpp_config():
  """configs/masked_patch.py:pretrain on ViT-micro/4, a batch for the 8 test devices, no warmup."""
  config = load_config_file(f"{CONFIG}:pretrain")
  config.model_name = "ViT-micro/4"
  config.batch_size = 8
  config.optim.warmup_steps = 0
  return config


def test_the_config_pretrains_with_masked_patches_and_fine_tunes_as_the_default_job():
  pretrain, finetune = (load_config_file(f"{CONFIG}:{stage}") for stage in ("pretrain", "finetune"))
  default = load_config_file(f"{CONFIG.parent / 'default.py'}:finetune")
  assert (pretrain.loss, pretrain.model.masked_patch_prediction) == ("masked_patch", True)
  assert pretrain.evals.test.type == "masked_patch" and pretrain.data.image_size == 16
  assert finetune.to_dict() == default.to_dict()
  with pytest.raises(AttributeError):
    pretrain.mask_ratio = 0.5  # locked
  with pytest.raises(ValueError, match="'pretrain' or 'finetune'"):
    load_config_file(f"{CONFIG}:pretrian")


def test_the_loss_needs_a_model_with_masked_patch_prediction():
  config = base_config("ViT-micro/4")
  config.loss = "masked_patch"
  with pytest.raises(ValueError, match=r"config.loss='masked_patch' trains on corrupted patch .* "
                                       r"which ViT-micro/4 does not have.*masked_patch_prediction=True"):
    build.setup(config, num_classes=10, train_examples=64)


def test_a_train_step_trains_the_colour_prediction_from_the_images_alone():
  """One step of Setup's compiled train step on a batch without labels: its loss and accuracy are
  those of the corruption the step's rng draws, and the class head gets nothing to learn."""
  setup = build.setup(mpp_config(), num_classes=10, train_examples=64)
  # Random weights (no init program to compile) with a real optimizer state.
  state = random_state(setup.abstract_state, scale=0.3)
  state = state.replace(opt_state=jax.device_put(setup.tx.init(state.params),
                                                 setup.state_shardings.opt_state))
  before = jax.device_get(state.params)
  images = np.random.default_rng(1).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
  _, step_rng = jax.random.split(jax.random.wrap_key_data(jax.device_get(state.rng)))
  forward = jax.jit(functools.partial(setup.model.clone(return_dense=True).apply, train=True))
  output = forward({"params": before}, images, rngs={"dropout": step_rng})
  batch = {"image": images}
  with parallel.activate(setup.mesh, setup.rules):
    state, metrics = setup.train_step(state, parallel.global_batch(batch, setup.mesh, setup.rules))
  after = jax.device_get(state.params)
  np.testing.assert_allclose(metrics["loss"], np.mean(mpp.masked_patch_loss(output, batch)),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(mpp.masked_patch_hits(output, batch)))
  assert not np.array_equal(after["mask_embedding"], before["mask_embedding"])
  np.testing.assert_array_equal(after["head"]["bias"], before["head"]["bias"])


class RecordingModel:
  """Stands in for a masked-patch model: returns random predictions, corrupts the patches the key
  says, and records how it was called."""
  calls = []

  def clone(self, **fields):
    assert fields == {"return_dense": True}
    return self

  def apply(self, variables, images, *, train, rngs):
    del variables
    self.calls.append((train, jax.random.key_data(rngs["dropout"])))
    corrupted = jax.random.bernoulli(rngs["dropout"], 0.5, (images.shape[0], 4))
    return mpp_output(batch=images.shape[0])._replace(corrupted=corrupted)


def test_the_eval_step_scores_real_examples_under_a_corruption_fixed_by_seed_and_batch_index():
  images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 3)), jnp.float32)
  batch = {"image": images, "mask": jnp.array([1.0, 1.0, 0.0])}  # the last one is padding
  model = RecordingModel()
  step = mpp.make_eval_step(model, seed=5)
  sums = step({}, batch, 2)
  train, key = model.calls[-1]
  assert not train  # no dropout
  np.testing.assert_array_equal(key, jax.random.key_data(jax.random.fold_in(jax.random.key(5), 2)))
  output = model.apply({}, images, train=False, rngs={"dropout": jax.random.wrap_key_data(key)})
  corrupted = np.asarray(output.corrupted)[:2]
  targets = np.asarray(mpp.mean_colour_classes(images, 2))[:2]
  log_probs = np.asarray(jax.nn.log_softmax(output.patch_logits))[:2]
  picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  right = np.argmax(log_probs, axis=-1) == targets
  np.testing.assert_allclose(sums["loss_sum"], -np.sum(picked * corrupted), rtol=1e-5)
  assert float(sums["correct"]) == np.sum(right * corrupted)
  assert (float(sums["patches"]), float(sums["count"])) == (corrupted.sum(), 2)
