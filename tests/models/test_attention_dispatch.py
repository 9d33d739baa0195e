"""Specification of attention_impl='auto': the path each backend runs, and the fallbacks to XLA, each
logged once with its reason."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.kernels import cpu_attention, tpu_flash_attention
from vit_jax.models import attention_dispatch, create_model
from vit_jax.models.attention_dispatch import PALLAS_MIN_TOKENS, resolve

from .tiny import images_for, random_variables


@pytest.mark.parametrize("backend, tokens, path", [
    ("gpu", 197, "fused"),
    ("cpu", 197, "cpu"),
    ("tpu", 1370, "pallas"),               # ViT-H/14 at 518 px
    ("tpu", PALLAS_MIN_TOKENS, "pallas"),
    ("tpu", PALLAS_MIN_TOKENS - 1, "xla"),
    ("tpu", 577, "xla"),                   # ViT-B/16 at 384 px: padding would cost more than it saves
    ("METAL", 197, "xla"),                 # any other backend
])
def test_auto_picks_the_backends_fastest_path(backend, tokens, path):
  assert resolve("auto", backend, tokens, dropout_active=False) == path


@pytest.mark.parametrize("impl", ["xla", "fused", "cpu", "pallas"])
@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_an_explicit_choice_is_kept_on_every_backend_and_dropout_means_xla(impl, backend):
  assert resolve(impl, backend, 1370, dropout_active=False) == impl
  assert resolve(impl, backend, 1370, dropout_active=True) == "xla"
  assert resolve("auto", backend, 1370, dropout_active=True) == "xla"


def test_an_unknown_choice_is_named():
  with pytest.raises(ValueError, match="attention_impl must be one of .*'auto'.*got 'flash'"):
    resolve("flash", "cpu", 197, dropout_active=False)


@pytest.fixture
def fresh_process_state():
  """Forgets what this process already tried and logged (before, and after, for the tests that follow)."""
  attention_dispatch.cpu_kernel_problem.cache_clear()
  attention_dispatch.warn_once.cache_clear()
  yield
  attention_dispatch.cpu_kernel_problem.cache_clear()
  attention_dispatch.warn_once.cache_clear()


def warnings_in(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_auto_on_a_cpu_host_without_the_kernel_runs_xla_and_says_why_once(
    fresh_process_state, monkeypatch, caplog):
  """A kernel that cannot be built (stand-in: register raises what a missing compiler raises) is tried
  once; every layer of every trace then runs the XLA path, which logs the reason once."""
  calls = []

  def cannot_build():
    calls.append(1)
    raise cpu_attention.KernelBuildError("no C++ compiler found (set CXX, or use attention_impl='xla')")

  monkeypatch.setattr(cpu_attention, "register", cannot_build)
  model = create_model("ViT-micro/4", num_classes=3)
  assert model.attention_impl == "auto"
  variables, images = random_variables(model), images_for(model)
  with caplog.at_level(logging.WARNING):
    for n in (1, 2):  # two traces of two layers each
      jax.eval_shape(model.apply, variables, images[:n])
    program = jax.jit(model.apply).lower(variables, images).as_text()
  assert program == jax.jit(model.clone(attention_impl="xla").apply).lower(variables, images).as_text()
  assert len(calls) == 1
  (message,) = warnings_in(caplog)
  assert "attention_impl='auto' runs the XLA attention path" in message
  assert "no C++ compiler found" in message


def test_auto_on_a_cpu_host_with_the_kernel_runs_it(fresh_process_state):
  assert attention_dispatch.choose("auto", "cpu", 197, dropout_active=False) == "cpu"


def test_attention_dropout_falls_back_to_xla_and_says_so_once(fresh_process_state, caplog):
  with caplog.at_level(logging.WARNING):
    for _ in range(3):
      assert attention_dispatch.choose("cpu", "cpu", 197, dropout_active=True) == "xla"
    assert attention_dispatch.choose("auto", "tpu", 197, dropout_active=True) == "xla"  # xla anyway
  (message,) = warnings_in(caplog)
  assert "attention_impl='cpu' runs the XLA attention path where attention dropout is active" in message


def test_pallas_gets_the_layers_token_major_operands_and_scale(monkeypatch):
  """The layer's side of attention_impl='pallas', with a stand-in kernel (the kernel itself, in TPU
  interpret mode: tests/kernels/test_tpu_flash_attention.py)."""
  calls = []

  def stand_in(q, k, v, scale):
    calls.append((q.shape, scale))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)

  monkeypatch.setattr(tpu_flash_attention, "attention", stand_in)
  model = create_model("ViT-micro/4", num_classes=3, attention_impl="xla")
  variables, images = random_variables(model), images_for(model)
  got = jax.jit(model.clone(attention_impl="pallas").apply)(variables, images)
  np.testing.assert_allclose(got, jax.jit(model.apply)(variables, images), atol=1e-5)
  head_dim = model.hidden_size // model.num_heads
  assert calls == [((2, 17, model.num_heads, head_dim), head_dim ** -0.5)] * model.num_layers
