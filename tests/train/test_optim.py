"""Specification of the optimizer: schedule values, decay mask, and each optimizer kind."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.configuration import optim_config
from vit_jax.train.optim import decay_mask, learning_rate_schedule, make_optimizer


def config(**kw):
  cfg = optim_config()
  cfg.update(kw)
  return cfg


def test_linear_warmup_then_cosine_to_the_end_value():
  schedule = learning_rate_schedule(config(learning_rate=1.0, warmup_steps=10, decay="cosine",
                                           end_learning_rate=0.1), total_steps=110)
  np.testing.assert_allclose(
      [schedule(s) for s in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6)


def test_linear_decay_reaches_the_end_value():
  schedule = learning_rate_schedule(
      config(learning_rate=1e-3, warmup_steps=0, decay="linear", end_learning_rate=1e-5), 100)
  np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)],
                             [1e-3, 5.05e-4, 1e-5], rtol=1e-5)


def test_constant_after_warmup():
  schedule = learning_rate_schedule(config(learning_rate=0.2, warmup_steps=4, decay="constant"), 50)
  np.testing.assert_allclose([schedule(2), schedule(4), schedule(49)], [0.1, 0.2, 0.2], rtol=1e-6)


def test_bad_schedules_are_rejected():
  with pytest.raises(ValueError, match="warmup_steps"):
    learning_rate_schedule(config(warmup_steps=100), 100)
  with pytest.raises(ValueError, match="decay must be"):
    learning_rate_schedule(config(decay="step"), 100)


def test_weight_decay_skips_biases_norms_and_embeddings():
  params = {"embedding": {"kernel": jnp.ones((2, 2, 3, 4)), "bias": jnp.ones(4)},
            "cls": jnp.ones((1, 1, 4)),
            "Transformer": {"posembed_input": {"pos_embedding": jnp.ones((1, 5, 4))},
                            "encoder_norm": {"scale": jnp.ones(4), "bias": jnp.ones(4)}},
            "head": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
  mask = decay_mask(params)
  assert mask["embedding"]["kernel"] and mask["head"]["kernel"]
  assert not any([mask["embedding"]["bias"], mask["cls"], mask["head"]["bias"],
                  mask["Transformer"]["posembed_input"]["pos_embedding"],
                  mask["Transformer"]["encoder_norm"]["scale"]])


def one_update(cfg, params, grads):
  tx, _ = make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_sgd_first_step_is_minus_lr_times_gradient():
  params = {"w": {"kernel": jnp.ones((2, 2))}}
  grads = {"w": {"kernel": jnp.full((2, 2), 0.5)}}
  updates = one_update(config(name="sgd", learning_rate=0.1, grad_clip_norm=0.0), params, grads)
  np.testing.assert_allclose(updates["w"]["kernel"], -0.05)


def test_adamw_decays_kernels_but_not_biases():
  params = {"d": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates = one_update(config(name="adamw", learning_rate=0.1, weight_decay=0.5), params, zeros)
  np.testing.assert_allclose(updates["d"]["kernel"], -0.05, rtol=1e-6)
  np.testing.assert_allclose(updates["d"]["bias"], 0.0)


def test_global_norm_clipping_bounds_the_step():
  params = {"w": {"kernel": jnp.ones((2, 2))}}
  grads = {"w": {"kernel": jnp.full((2, 2), 100.0)}}
  updates = one_update(config(name="sgd", learning_rate=1.0, grad_clip_norm=1.0), params, grads)
  np.testing.assert_allclose(float(jnp.linalg.norm(updates["w"]["kernel"])), 1.0, rtol=1e-5)


def test_unknown_optimizer_is_rejected():
  with pytest.raises(ValueError, match="optim.name"):
    make_optimizer(config(name="lamb"), 10)
