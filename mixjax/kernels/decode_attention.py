"""One decoding step of attention against a KV cache: a split-K (flash-decoding) Pallas kernel.

A step has one query per sequence, so a program per (sequence, head) would leave most of a GPU idle.
The cache is instead split along the keys: each program reads one split of one kv head for all the
query heads that share it (grouped-query attention), writes a partial output and its log-sum-exp,
and a small XLA step merges the splits. Splits (and key blocks) past a sequence's length are not
read, so the bytes moved are those of the live cache.

Shapes: q_BHD `[batch, q_heads, head_dim]`, k_cache_BSKD / v_cache_BSKD
`[batch, max_len, kv_heads, head_dim]`, lengths_B int `[batch]` (keys `[0, length)` are live).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mixjax.kernels import common
from mixjax.kernels import flash_attention


def reference_decode_attention(q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B, *, scale=None):
  """Pure-JAX decode step: attention of each query to its cache's first `length` keys.

  Returns `[batch, q_heads, head_dim]` in q's dtype; a sequence of length 0 gets zeros.
  """
  batch = q_BHD.shape[0]
  lengths_B1 = lengths_B.astype(jnp.int32).reshape(batch, 1)
  out_B1HD = flash_attention.reference_flash_attention(
      q_BHD[:, None], k_cache_BSKD, v_cache_BSKD, jnp.zeros_like(lengths_B1), lengths_B1,
      scale=scale)
  return out_B1HD[:, 0]


@dataclasses.dataclass(frozen=True)
class DecodeBlockSizes:
  """Tiling of the cache. `block_k` keys per step; enough splits for `min_programs` programs.

  `min_programs` ≈ two waves of the GPU's SMs (H100: 132) so the cache streams from every SM.
  """
  block_k: int = 128
  min_programs: int = 264
  num_warps: int = 4
  num_stages: int = 2


def _decode_kernel(lengths_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, scale, block_k, split_len):
  """One (sequence, kv head, split): online softmax over the split's live keys.

  q_ref `[G, D]` (the kv head's query group), k_ref/v_ref `[split_len, D]`, o_ref `[G, D]` float32
  normalised within the split, lse_ref `[G, 1]` (base 2; -inf when the split holds no live key).
  """
  b, s = pl.program_id(0), pl.program_id(2)
  live = jnp.clip(lengths_ref[b] - s * split_len, 0, split_len)
  # lax.div (truncating; live >= 0): `//` on signed ints lowers via `sign`, which Mosaic rejects.
  num_full = lax.div(live, block_k)
  num_blocks = lax.div(live + block_k - 1, block_k)
  q_GD = q_ref[...]
  scale2 = scale * common.LOG2_E

  def step(j, state, masked):
    keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    k_ND, v_ND = k_ref[keys, :], v_ref[keys, :]
    s_GN = common.dot_nt(q_GD, k_ND) * scale2
    if masked:  # Only the last, partly live block.
      pos_1N = j * block_k + lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
      s_GN = jnp.where(pos_1N < live, s_GN, -jnp.inf)
      # Dead cache slots may hold anything (stale or uninitialised); 0 * NaN would leak through.
      pos_N1 = j * block_k + lax.broadcasted_iota(jnp.int32, (block_k, 1), 0)
      v_ND = jnp.where(pos_N1 < live, v_ND, 0)
    # Every visited block holds a live key, so no row's running max stays -inf.
    return common.softmax_update(state, s_GN, v_ND, may_be_empty=False)

  state = common.softmax_init(*q_GD.shape)
  state = lax.fori_loop(0, num_full, functools.partial(step, masked=False), state)
  state = lax.fori_loop(num_full, num_blocks, functools.partial(step, masked=True), state)
  out_GD, lse_G1, seen_G1 = common.softmax_finish(state)
  o_ref[...] = out_GD
  lse_ref[...] = jnp.where(seen_G1, lse_G1, -jnp.inf)


def _largest_pow2_divisor(n, cap):
  block = 1
  while block < cap and n % (2 * block) == 0:
    block *= 2
  return block


def decode_attention(q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B, *, scale=None, interpret=None,
                     block_sizes=None, platform=None):
  """Split-K Pallas attention of one query step to a KV cache; numbers as the reference.

  Args:
    q_BHD: `[batch, q_heads, head_dim]`, float32 or bfloat16.
    k_cache_BSKD, v_cache_BSKD: `[batch, max_len, kv_heads, head_dim]`, kv_heads dividing q_heads.
    lengths_B: int `[batch]`; keys `[0, length)` are attended (clipped to `max_len`).
    scale: logit scale; default `head_dim ** -0.5`.
    interpret: run in the Pallas interpreter; default: only on CPU.
    block_sizes: `DecodeBlockSizes`.
    platform: `'gpu' | 'tpu' | 'cpu'`; default `jax.default_backend()`.

  Returns:
    `[batch, q_heads, head_dim]` in q's dtype; zeros where `length == 0`.

  The cache is read in place when `max_len` is a multiple of the platform's smallest key tile
  and head_dim one of its tile widths (GPU: a power of two >= 16; TPU: a multiple of 128);
  otherwise a padded copy is made, which costs a pass over the cache.
  """
  batch, num_heads, head_dim = q_BHD.shape
  _, max_len, num_kv_heads, _ = k_cache_BSKD.shape
  if (k_cache_BSKD.shape != v_cache_BSKD.shape or k_cache_BSKD.shape[0] != batch
      or k_cache_BSKD.shape[3] != head_dim):
    raise ValueError(f"k_cache {k_cache_BSKD.shape} and v_cache {v_cache_BSKD.shape} must both be "
                     f"[batch={batch}, max_len, kv_heads, head_dim={head_dim}].")
  if num_heads % num_kv_heads:
    raise ValueError(f"kv_heads={num_kv_heads} must divide q_heads={num_heads}.")
  if lengths_B.shape != (batch,):
    raise ValueError(f"lengths {lengths_B.shape} must be [batch] = ({batch},).")
  plat, interpret = common.resolve_platform(platform, interpret)
  bs = DecodeBlockSizes() if block_sizes is None else block_sizes
  group = num_heads // num_kv_heads
  scale = float(head_dim**-0.5 if scale is None else scale)

  # Tiles: the query group is padded to the matmul unit's minimum rows; keys and head_dim to
  # what the backend can tile.
  rows = max(group, plat.min_block_q)
  padded_dim = plat.pad_head_dim(head_dim)
  padded_len = common.round_up(max_len, plat.min_block_k)
  block_k = max(plat.min_block_k, _largest_pow2_divisor(padded_len, bs.block_k))
  num_blocks = padded_len // block_k
  num_splits = min(num_blocks, -(-bs.min_programs // (batch * num_kv_heads)))
  while num_blocks % num_splits:
    num_splits -= 1
  split_len = padded_len // num_splits

  q_BKGD = jnp.pad(q_BHD.reshape(batch, num_kv_heads, group, head_dim),
                   ((0, 0), (0, 0), (0, rows - group), (0, padded_dim - head_dim)))
  pad = ((0, 0), (0, padded_len - max_len), (0, 0), (0, padded_dim - head_dim))
  k_BSF, v_BSF = (jnp.pad(x, pad).reshape(batch, padded_len, -1)
                  for x in (k_cache_BSKD, v_cache_BSKD))
  lengths_B = jnp.clip(lengths_B.astype(jnp.int32), 0, max_len)

  kernel = functools.partial(_decode_kernel, scale=scale, block_k=block_k, split_len=split_len)
  cache = pl.BlockSpec((None, split_len, padded_dim), lambda b, h, s: (b, s, h))
  partial_shape = (batch, num_kv_heads, num_splits, rows)
  o_BKSGD, lse_BKSG1 = pl.pallas_call(
      kernel, grid=(batch, num_kv_heads, num_splits),
      in_specs=[plat.table_spec(),
                pl.BlockSpec((None, None, rows, padded_dim), lambda b, h, s: (b, h, 0, 0)),
                cache, cache],
      out_specs=[pl.BlockSpec((None, None, None, rows, padded_dim),
                              lambda b, h, s: (b, h, s, 0, 0)),
                 pl.BlockSpec((None, None, None, rows, 1), lambda b, h, s: (b, h, s, 0, 0))],
      out_shape=[jax.ShapeDtypeStruct((*partial_shape, padded_dim), jnp.float32),
                 jax.ShapeDtypeStruct((*partial_shape, 1), jnp.float32)],
      compiler_params=plat.compiler_params(bs.num_warps, bs.num_stages, 3),
      interpret=interpret, name="decode_attention",
  )(lengths_B, q_BKGD, k_BSF, v_BSF)

  # Merge the splits: weights 2^(lse_s - lse), zero for splits without live keys.
  max_BK1G1 = jnp.max(lse_BKSG1, axis=2, keepdims=True)
  max_BK1G1 = jnp.where(max_BK1G1 == -jnp.inf, 0.0, max_BK1G1)
  weight_BKSG1 = jnp.exp2(lse_BKSG1 - max_BK1G1)
  total_BKG1 = jnp.sum(weight_BKSG1, axis=2)
  out_BKGD = jnp.sum(weight_BKSG1 * o_BKSGD, axis=2) / jnp.where(total_BKG1 > 0, total_BKG1, 1.0)
  out_BKGD = out_BKGD[:, :, :group, :head_dim]
  return out_BKGD.reshape(batch, num_heads, head_dim).astype(q_BHD.dtype)
