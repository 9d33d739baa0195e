"""Specification of the C++ CPU attention kernel: the same function and gradients as softmax attention,
float32 arithmetic for bfloat16 operands, per-shard execution under a mesh, clear errors, and loaded
only when a model chooses it."""
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import parallel
from vit_jax.kernels import cpu_attention
from vit_jax.models import create_model


def reference(q, k, v, scale=None):
  """softmax(scale q k^T) v in float32 at full matmul precision, token-major operands."""
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k, precision="highest")
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision="highest")


def operands(shape, dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  return tuple(jax.random.normal(key, shape, jnp.float32).astype(dtype) for key in keys)


def value_and_pullback(attention, q, k, v, cotangent):
  out, pullback = jax.vjp(attention, q, k, v)
  return (out, *pullback(cotangent))


@pytest.mark.parametrize("shape", [(3, 7, 2, 5), (2, 17, 4, 8), (1, 1, 1, 1)])
def test_forward_and_gradients_equal_softmax_attention(shape):
  q, k, v, cotangent = operands(shape)
  got = jax.jit(lambda *a: value_and_pullback(cpu_attention.attention, *a))(q, k, v, cotangent)
  want = value_and_pullback(reference, q, k, v, cotangent)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    np.testing.assert_allclose(g, w, atol=2e-6, rtol=2e-6, err_msg=name)


def test_an_explicit_scale_replaces_the_default():
  q, k, v, cotangent = operands((2, 5, 3, 4))
  scaled = lambda q, k, v: cpu_attention.attention(q, k, v, scale=0.3)  # noqa: E731
  got = jax.jit(lambda *a: value_and_pullback(scaled, *a))(q, k, v, cotangent)
  want = value_and_pullback(lambda q, k, v: reference(q, k, v, 0.3), q, k, v, cotangent)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    np.testing.assert_allclose(g, w, atol=2e-6, rtol=2e-6, err_msg=name)


def test_bfloat16_operands_are_computed_in_float32():
  q, k, v, cotangent = operands((2, 9, 3, 4), jnp.bfloat16)
  got = jax.jit(lambda *a: value_and_pullback(cpu_attention.attention, *a))(q, k, v, cotangent)
  want = value_and_pullback(reference, q, k, v, cotangent.astype(jnp.float32))
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    assert g.dtype == jnp.bfloat16, name
    # Only the rounding of the bfloat16 result remains (8 bits of mantissa).
    np.testing.assert_allclose(g.astype(jnp.float32), w, atol=2e-2, rtol=1e-2, err_msg=name)


def test_vmapped_calls_run_one_by_one():
  q, k, v, _ = operands((4, 2, 5, 2, 3))
  got = jax.vmap(cpu_attention.attention)(q, k, v)
  np.testing.assert_allclose(got, jax.vmap(reference)(q, k, v), atol=2e-6)


def test_runs_per_shard_under_a_mesh_without_gathering_the_batch_or_heads():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = parallel.rules_for("fsdp_tensor")
  q, k, v, cotangent = operands((4, 6, 4, 3))
  with parallel.activate(mesh, rules):
    spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
    sharding = NamedSharding(mesh, spec)
    args = [jax.device_put(t, sharding) for t in (q, k, v, cotangent)]
    step = jax.jit(lambda *a: value_and_pullback(cpu_attention.attention, *a))
    hlo = step.lower(*args).compile().as_text()
    got = step(*args)
  assert spec == PartitionSpec(("data", "fsdp"), None, "tensor", None)
  assert "all-gather" not in hlo and "all-to-all" not in hlo
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, value_and_pullback(reference, q, k, v,
                                                                           cotangent)):
    assert g.sharding.spec == spec, name
    np.testing.assert_allclose(g, w, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("layout", [dict(), dict(scan_layers=True, remat_policy="full")])
def test_vit_with_the_kernel_computes_the_same_logits_and_gradients(layout):
  images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  model = create_model("ViT-micro/4", num_classes=5, attention_impl="xla", **layout)
  params = nn.unbox(model.init(jax.random.key(0), images, train=False)["params"])
  params["head"]["kernel"] = jax.random.normal(jax.random.key(3), params["head"]["kernel"].shape)
  kernel_model = create_model("ViT-micro/4", num_classes=5, attention_impl="cpu", **layout)

  def loss(model, params):
    return jnp.sum(model.apply({"params": params}, images, train=False) ** 2)

  np.testing.assert_allclose(kernel_model.apply({"params": params}, images),
                             model.apply({"params": params}, images), atol=1e-5)
  got = jax.grad(lambda p: loss(kernel_model, p))(params)
  want = jax.grad(lambda p: loss(model, p))(params)
  # Rounding only: the reference's products round differently without fused multiply-adds (tests
  # compile without LLVM's passes, tests/conftest.py): one of 1024 values moved by 1.7e-4.
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=2e-4, rtol=5e-4), got, want)


def test_operands_of_different_shapes_are_rejected():
  q, k, v, _ = operands((2, 5, 2, 3))
  with pytest.raises(ValueError, match="one .batch, tokens, heads, head_dim. shape"):
    cpu_attention.attention(q, k[:, :4], v)


def test_integer_operands_are_rejected():
  q = jnp.ones((1, 2, 1, 2), jnp.int32)
  with pytest.raises(ValueError, match="float32 or bfloat16"):
    cpu_attention.attention(q, q, q)


def test_a_failing_compiler_is_reported_with_its_command(tmp_path, monkeypatch):
  monkeypatch.setenv("VIT_JAX_KERNEL_CACHE", str(tmp_path))
  monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
  with pytest.raises(cpu_attention.KernelBuildError, match="compiling cpu_attention.cc failed"):
    cpu_attention.build()
  assert not list(tmp_path.glob("*.so"))  # nothing partial is left where a reader would find it


def test_an_empty_cache_gets_the_compilers_library_that_later_builds_reuse(tmp_path, monkeypatch):
  """The cache's contract, with a stand-in compiler that logs its calls and writes its -o file (the
  real compilation runs in every other test of this file whenever the cache lacks the library, and
  took about 20 s here)."""
  cache, calls = tmp_path / "cache", tmp_path / "calls"
  compiler = tmp_path / "c++"
  compiler.write_text('#!/bin/sh\necho "$@" >> "%s"\nwhile [ "$1" != -o ]; do shift; done\n'
                      'printf library > "$2"\n' % calls)
  compiler.chmod(0o755)
  monkeypatch.setenv("VIT_JAX_KERNEL_CACHE", str(cache))
  monkeypatch.setenv("CXX", str(compiler))
  library = cpu_attention.build()
  assert library.parent == cache and library.suffix == ".so" and library.read_text() == "library"
  assert str(cpu_attention.SOURCE) in calls.read_text()
  assert cpu_attention.build() == library
  assert len(calls.read_text().splitlines()) == 1  # the second build found it
  assert [path.name for path in cache.iterdir()] == [library.name]  # no scratch files left


def test_models_load_neither_kernels_nor_sharding_code_unless_the_kernel_is_chosen():
  """vit_jax.models imports vit_jax.kernels inside the attention call, for attention_impl='cpu' only;
  model code never imports vit_jax.parallel (the kernel does, for its per-shard call)."""
  program = textwrap.dedent("""
      import sys
      import jax, jax.numpy as jnp
      from vit_jax.models import create_model
      model = create_model("ViT-micro/4", num_classes=5, attention_impl="xla")
      images = jnp.zeros((1, 16, 16, 3))
      model.apply(model.init(jax.random.key(0), images), images)
      print(sorted(m for m in sys.modules if m.startswith(("vit_jax.kernels", "vit_jax.parallel"))))
  """)
  result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
  assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
