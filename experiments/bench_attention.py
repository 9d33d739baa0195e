"""Attention core (softmax(q k^T) v, forward and backward) of one ViT layer in XLA, by operand layout.

  python experiments/bench_attention.py [--batch=8 --tokens=197 --heads=12 --head_dim=64]
      [--torch_python=/tmp/timm_venv/bin/python] [--rounds=5]

Why: on CPU the batched matmuls of attention run far below the GEMM rate, and their operand layout
matters; the C++ kernel behind attention_impl='cpu' is timed beside them. Each round times every
variant once (median of 5 calls), in turns; with --torch_python PyTorch's
scaled_dot_product_attention runs in a server process as the reference.
"""
import argparse
import os
import subprocess
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vit_jax.kernels import cpu_attention  # noqa: E402

TORCH_SERVER = textwrap.dedent("""
    import sys, time, torch
    b, n, h, d = map(int, sys.argv[1:5])
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    ct = torch.randn(b, h, n, d)
    def call():
        torch.nn.functional.scaled_dot_product_attention(q, k, v).backward(ct)
    for _ in range(3):
        call()
    print("ready", flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
        print(sorted(times)[len(times) // 2], flush=True)
""")


def token_major(q, k, v):
  """(b, n, h, d) operands, contracted as they come."""
  weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def head_major(q, k, v):
  """(b, n, h, d) operands transposed to (b, h, n, d) first (what the model does)."""
  q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
  weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k), axis=-1)
  return jnp.einsum("bhqk,bhkd->bhqd", weights, v).transpose(0, 2, 1, 3)


def library(q, k, v):
  """jax.nn.dot_product_attention (XLA's implementation on CPU)."""
  return jax.nn.dot_product_attention(q, k, v)


def kernel(q, k, v):
  """attention_impl='cpu': the C++ FFI kernel of vit_jax/kernels/cpu_attention.py, token-major."""
  return cpu_attention.attention(q, k, v, scale=1.0)


def timer(attention, shape):
  """Returns time(calls) -> median seconds of one forward + backward of `attention`."""
  rng = np.random.RandomState(0)
  q, k, v, ct = (jnp.asarray(rng.randn(*shape), jnp.float32) for _ in range(4))

  @jax.jit
  def forward_backward(q, k, v, ct):
    _, pullback = jax.vjp(attention, q, k, v)
    return pullback(ct)

  jax.block_until_ready(forward_backward(q, k, v, ct))

  def time_calls(calls):
    times = []
    for _ in range(calls):
      start = time.perf_counter()
      jax.block_until_ready(forward_backward(q, k, v, ct))
      times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
  return time_calls


def torch_timer(python, batch, tokens, heads, head_dim):
  server = subprocess.Popen([python, "-c", TORCH_SERVER, str(batch), str(tokens), str(heads),
                             str(head_dim)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  server.stdout.readline()

  def time_calls(calls):
    server.stdin.write(f"{calls}\n")
    server.stdin.flush()
    return float(server.stdout.readline())
  return time_calls


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--tokens", type=int, default=197)
  parser.add_argument("--heads", type=int, default=12)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--torch_python", default="")
  args = parser.parse_args()
  shape = (args.batch, args.tokens, args.heads, args.head_dim)
  variants = {"xla token-major (b,n,h,d)": timer(token_major, shape),
              "xla head-major (b,h,n,d)": timer(head_major, shape),
              "jax.nn.dot_product_attention": timer(library, shape)}
  if jax.default_backend() == "cpu":
    variants["vit_jax cpu kernel (b,n,h,d)"] = timer(kernel, shape)
  if args.torch_python:
    variants["torch scaled_dot_product_attention"] = torch_timer(args.torch_python, *shape)
  rounds = [{name: time_calls(5) for name, time_calls in variants.items()} for _ in range(args.rounds)]
  flops = 3 * 2 * 2 * args.batch * args.heads * args.tokens ** 2 * args.head_dim
  print(f"attention core forward + backward, batch {args.batch}, {args.tokens} tokens, "
        f"{args.heads} heads of {args.head_dim}, {jax.devices()[0].device_kind}:")
  for name in variants:
    seconds = float(np.median([r[name] for r in rounds]))
    print(f"  {name:36s} {seconds * 1e3:7.1f} ms  {flops / seconds / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
  main()
