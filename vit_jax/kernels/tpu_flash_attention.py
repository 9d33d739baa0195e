"""softmax(scale q k^T) v on TPU through the Pallas flash-attention kernel that ships with JAX.

Why: for long sequences (ViT-H/14 at 518 px has 1,370 tokens) the kernel never writes the
(tokens x tokens) weights to HBM, forward or backward. It takes head-major operands whose token count
is a multiple of its 128-token blocks; ViT token counts (197, 577, 1370) are not, so the tokens are
padded to a whole block, the padded keys are masked (they form a second segment, which real queries
do not attend to) and the padded rows are sliced away. Under a mesh it runs per shard.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash

from vit_jax.kernels.per_shard import per_shard

BLOCK = 128  # tokens per block; the kernel needs key blocks that are a multiple of 128 lanes


def _padded(tokens: int, block: int) -> int:
  return -(-tokens // block) * block


def _flash(q, k, v, scale, block):
  """The kernel on token-major operands of one shard: pad, mask, transpose, run, undo."""
  batch, tokens, _, _ = q.shape
  padded = _padded(tokens, block)
  pad = ((0, 0), (0, padded - tokens), (0, 0), (0, 0))
  q, k, v = (jnp.pad(t, pad).transpose(0, 2, 1, 3) for t in (q, k, v))  # (batch, heads, padded, d)
  segment = jnp.broadcast_to((jnp.arange(padded) >= tokens).astype(jnp.int32), (batch, padded))
  sizes = pallas_flash.BlockSizes(
      block_q=block, block_k_major=block, block_k=block, block_b=1,
      block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block, block_q_dkv=block,
      block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
  out = pallas_flash.flash_attention(
      q, k, v, segment_ids=pallas_flash.SegmentIds(q=segment, kv=segment), sm_scale=scale,
      block_sizes=sizes)
  return out.transpose(0, 2, 1, 3)[:, :tokens]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: Optional[float] = None) -> jax.Array:
  """softmax(scale q k^T) v over token-major (batch, tokens, heads, head_dim) operands, the layout of
  the other attention paths; the scale defaults to head_dim**-0.5 and is applied to the float32 logits.

  float32 or bfloat16 operands (bfloat16 matmuls accumulate in float32), output in their dtype.
  Runs on TPU, or on CPU under jax.experimental.pallas.tpu.force_tpu_interpret_mode().
  """
  if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
    raise ValueError(f"pallas attention takes q, k, v of one (batch, tokens, heads, head_dim) shape, "
                     f"got {q.shape}, {k.shape}, {v.shape}")
  if q.dtype not in (jnp.float32, jnp.bfloat16) or not q.dtype == k.dtype == v.dtype:
    raise ValueError(f"pallas attention takes float32 or bfloat16 operands of one dtype, got "
                     f"{q.dtype}, {k.dtype}, {v.dtype}")
  head_dim = q.shape[-1]
  if head_dim > 128 and head_dim % 128:
    raise ValueError(f"the Pallas flash kernel takes head_dim up to 128 or a multiple of 128, got "
                     f"{head_dim}; use attention_impl='xla'")
  scale = head_dim ** -0.5 if scale is None else float(scale)
  return per_shard(functools.partial(_flash, scale=scale, block=BLOCK), q, k, v)
