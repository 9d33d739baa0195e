"""Specification of pipeline strings: parsing, clear errors, seeds per random op, context arguments."""
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import mixing, pp, preprocess


def test_parse_reads_names_positional_and_keyword_literals():
  assert pp.parse("decode| inception_crop(224, area_min=0.08) |flip_lr|value_range(-1, 1)") == [
      ("decode", (), {}), ("inception_crop", (224,), {"area_min": 0.08}), ("flip_lr", (), {}),
      ("value_range", (-1, 1), {})]
  assert pp.parse("") == []


def test_bad_strings_and_unknown_ops_are_clear_errors():
  with pytest.raises(ValueError, match="Cannot parse 'resize\\(size\\)'"):
    pp.parse("decode|resize(size)")
  with pytest.raises(ValueError, match="Unknown op 'flip_ud'.*flip_lr"):
    pp.build("decode|flip_ud")
  with pytest.raises(ValueError, match="Bad arguments for op 'resize'.*resize\\(size, key="):
    pp.build("resize(224, mode='area')")
  with pytest.raises(ValueError, match="Unknown batch op 'mixup_v2'"):
    pp.build_batch("mixup_v2(0.1)")


def test_a_pipeline_equals_its_ops_applied_in_order_with_one_seed_per_random_op():
  image = tf.constant(np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8))
  seed = tf.constant([4, 2], tf.int64)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  expected = preprocess.value_range(preprocess.flip_lr(
      preprocess.inception_crop(image, 8, (0.5, 1.0), seed=crop_seed), flip_seed), 0, 1)
  out = pp.build("decode|inception_crop(8, area_min=0.5)|flip_lr|value_range(0, 1)")(
      {"image": image, "label": tf.constant(3)}, seed)
  np.testing.assert_array_equal(out["image"].numpy(), expected.numpy())
  assert int(out["label"]) == 3


def test_context_fills_num_classes_unless_the_string_gives_it():
  example = {"image": tf.zeros([2, 2, 3], tf.uint8), "label": tf.constant(1)}
  assert pp.build("onehot", num_classes=5)(example)["label"].shape == (5,)
  assert pp.build("onehot(7)", num_classes=5)(example)["label"].shape == (7,)
  multi = pp.build("multi_hot(smoothing=0.0)", num_classes=4)(
      {"image": example["image"], "labels": tf.constant([0, 2])})
  np.testing.assert_array_equal(multi["label"].numpy(), [1, 0, 1, 0])
  assert "labels" not in multi


def test_decoding_part_and_rest_split_at_the_last_decoding_op():
  p = pp.build("decode|resize(4)|value_range")
  assert p.num_decoding_ops == 1 and p.num_random == 0
  example = {"image": tf.zeros([8, 8, 3], tf.uint8)}
  np.testing.assert_array_equal(p.rest(p.decoding_part(example))["image"].numpy(),
                                p(example)["image"].numpy())
  assert pp.build("resize(4)").num_decoding_ops == 0


def test_mixup_or_cutmix_is_a_batch_op_seeded_like_the_others_and_checked_when_read():
  batch = {"image": tf.constant(np.random.default_rng(1).uniform(size=(4, 6, 6, 3)), tf.float32),
           "label": tf.eye(4)}
  seed = tf.constant([4, 2], tf.int64)
  op_seed = tf.random.experimental.stateless_split(seed, 1)[0]  # the one op's seed
  out = pp.build_batch("mixup_or_cutmix(0.8, 1.0, switch_prob=0.25)")(batch, seed)
  expected = mixing.mixup_or_cutmix(batch, 0.8, 1.0, 0.25, seed=op_seed)
  np.testing.assert_array_equal(out["image"].numpy(), expected["image"].numpy())
  with pytest.raises(ValueError, match="switch_prob=2 is the probability of cutmix"):
    pp.build_batch("mixup_or_cutmix(0.8, 1.0, 2)")
  with pytest.raises(ValueError, match="Bad arguments for batch op 'mixup_or_cutmix'.*cutmix_alpha"):
    pp.build_batch("mixup_or_cutmix(0.8)")


def test_the_batch_ops_that_mix_images_are_known_by_name():
  assert pp.mixing_batch_ops("mixup(0.2)|cutmix(1.0)|mixup_or_cutmix(0.8, 1.0)|value_range") == [
      "mixup", "cutmix", "mixup_or_cutmix"]
  assert pp.mixing_batch_ops("inception_crop(8)|flip_lr|value_range") == []
