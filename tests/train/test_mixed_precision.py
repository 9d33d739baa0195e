"""Specification of mixed precision: bf16 compute with f32 params and accumulation tracks f32 training."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.configuration import base_config
from vit_jax.models import create_model
from vit_jax.configuration import optim_config
from vit_jax.train.optim import make_optimizer


def tiny(dtype=None, mu_dtype=""):
  config = base_config("ViT-micro/4")
  config.data.image_size = 16
  config.batch_size = 16
  config.train.steps = 12
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 1
  config.optim.mu_dtype = mu_dtype
  config.model.dtype = dtype
  return config


def test_bf16_training_curve_stays_close_to_f32(train_losses):
  f32 = np.array(train_losses(tiny(), steps=12))
  bf16 = np.array(train_losses(tiny("bfloat16"), steps=12))
  assert bf16[-1] < bf16[0]
  np.testing.assert_allclose(bf16, f32, rtol=0.03, atol=0.03)


def test_bf16_training_curve_under_fsdp_and_tensor_parallel_matches_data_parallel_bf16(train_losses):
  """The bf16 matmuls' own backward pass (CPU) reshapes sharded activations: same numbers sharded."""
  sharded = tiny("bfloat16")
  sharded.sharding = "fsdp_tensor"
  sharded.fsdp_min_size = 0
  sharded.mesh.update(data=2, fsdp=2, tensor=2)
  np.testing.assert_allclose(train_losses(sharded, steps=5), train_losses(tiny("bfloat16"), steps=5),
                             rtol=1e-2, atol=1e-2)


def test_bf16_first_moment_option_trains_like_f32(train_losses):
  f32 = np.array(train_losses(tiny(), steps=12))
  half_mu = np.array(train_losses(tiny(mu_dtype="bfloat16"), steps=12))
  np.testing.assert_allclose(half_mu, f32, rtol=0.03, atol=0.03)


def test_bf16_first_moment_is_stored_in_bf16():
  cfg = optim_config()
  cfg.mu_dtype = "bfloat16"
  tx, _ = make_optimizer(cfg, 10)
  params = {"w": {"kernel": jnp.ones((4, 4))}}
  leaves = jax.tree.leaves(tx.init(params))
  assert {leaf.dtype for leaf in leaves if leaf.shape == (4, 4)} == {jnp.dtype(jnp.bfloat16),
                                                                    jnp.dtype(jnp.float32)}


def test_bf16_model_keeps_f32_logits_close_to_f32_model():
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  f32 = create_model("ViT-micro/4", num_classes=4, head_bias_init=0.0)
  params = nn.unbox(f32.init(jax.random.key(1), images)["params"])
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)
  bf16 = create_model("ViT-micro/4", num_classes=4, dtype="bfloat16")
  a = f32.apply({"params": params}, images)
  b = bf16.apply({"params": params}, images)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=0.1)
