"""Attention over per-row key ranges: a Pallas flash-attention kernel and its pure-JAX reference.

Masks are described per query row as a key range `[k_start, k_end)` (DESIGN.md): causal, packed
documents and prefix-LM all reduce to one contiguous range per row, so no T×T mask is ever an
input. A row whose range is empty attends to nothing and outputs zeros.

Shapes: q_BTHD `[batch, q_len, q_heads, head_dim]`, k_BSKD / v_BSKD
`[batch, kv_len, kv_heads, head_dim]` with kv_heads dividing q_heads (grouped-query attention;
q head h reads kv head `h // (q_heads // kv_heads)`), k_start_BT / k_end_BT int32 `[batch, q_len]`.

How the kernel skips work. The rows are cut into query blocks and the keys into key blocks. For
each query block the wrapper computes, from the ranges alone, a *block table* row
`(lo, hi, full_lo, full_hi)`: key blocks `[lo, hi)` hold every key any non-empty row of the block
may see, and `[full_lo, full_hi)` are the key blocks every row sees completely. The kernels loop
over `[lo, hi)` only (so packed short documents visit a few blocks near the diagonal) and drop the
element mask on `[full_lo, full_hi)`. `num_visited_blocks` counts the same thing for benchmarks.

Backends, tiling arithmetic and the online-softmax state are shared with the other kernels
(`common`): one set of kernel bodies here, launched per backend by a `common.Platform`. On TPU
(`Platform.stream_kv_blocks`) a second, streamed launch of the same arithmetic feeds the visited
K/V blocks through the grid from a scalar-prefetched block table, so long sequences fit in VMEM
(see "Streamed launch" below).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from mixjax.kernels import common

# The tile type callers pass as `block_sizes=`; defined in common since each Platform carries
# its defaults.
BlockSizes = common.BlockSizes
_TABLE_WIDTH = 4  # lo, hi, full_lo, full_hi per query block.


def reference_flash_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, *, scale=None):
  """Exact softmax attention restricted to keys in [k_start, k_end); float32 softmax.

  Returns `[batch, q_len, q_heads, head_dim]` in q's dtype; empty rows give zeros.
  """
  _, _, num_q_heads, head_dim = q_BTHD.shape
  num_kv_heads = k_BSKD.shape[2]
  if num_q_heads % num_kv_heads:
    raise ValueError(f"kv_heads={num_kv_heads} must divide q_heads={num_q_heads}.")
  group = num_q_heads // num_kv_heads
  scale = head_dim**-0.5 if scale is None else scale
  q_BTKGD = q_BTHD.reshape(*q_BTHD.shape[:2], num_kv_heads, group, head_dim)
  logits_BKGTS = jnp.einsum(
      "btkgd,bskd->bkgts", q_BTKGD, k_BSKD, preferred_element_type=jnp.float32
  ) * scale
  key_pos_S = jnp.arange(k_BSKD.shape[1], dtype=jnp.int32)
  key_pos_11S = key_pos_S[None, None, :]  # explicit broadcast (rank promotion raises in tests)
  mask_BTS = (key_pos_11S >= k_start_BT[..., None]) & (key_pos_11S < k_end_BT[..., None])
  mask_B11TS = mask_BTS[:, None, None]
  logits_BKGTS = jnp.where(mask_B11TS, logits_BKGTS, -jnp.inf)
  max_BKGT1 = jnp.max(logits_BKGTS, axis=-1, keepdims=True)
  max_BKGT1 = jnp.where(jnp.isfinite(max_BKGT1), max_BKGT1, 0.0)
  probs_BKGTS = jnp.where(mask_B11TS, jnp.exp(logits_BKGTS - max_BKGT1), 0.0)
  denom_BKGT1 = jnp.sum(probs_BKGTS, axis=-1, keepdims=True)
  probs_BKGTS = probs_BKGTS / jnp.where(denom_BKGT1 > 0, denom_BKGT1, 1.0)
  out_BTKGD = jnp.einsum(
      "bkgts,bskd->btkgd", probs_BKGTS.astype(v_BSKD.dtype), v_BSKD,
      preferred_element_type=jnp.float32)
  return out_BTKGD.reshape(q_BTHD.shape).astype(q_BTHD.dtype)


# ----------------------------------------------------------------------------------------------
# Tiles.


def _fit_block(block, length, minimum):
  """Shrinks a tile for short sequences (no point in a 128-row tile for 5 rows)."""
  return max(minimum, min(block, pl.next_power_of_2(max(length, 1))))


# ----------------------------------------------------------------------------------------------
# Block tables: which key blocks each query block must visit.


def _clip_ranges(k_start_BT, k_end_BT, kv_len=None):
  """Ranges clipped to existing keys; an empty or inverted range becomes [0, 0)."""
  k_start_BT = jnp.clip(k_start_BT.astype(jnp.int32), 0, kv_len)
  k_end_BT = jnp.clip(k_end_BT.astype(jnp.int32), 0, kv_len)
  empty_BT = k_start_BT >= k_end_BT
  return jnp.where(empty_BT, 0, k_start_BT), jnp.where(empty_BT, 0, k_end_BT)


def block_table(k_start_BT, k_end_BT, block_q, block_k):
  """int32 `[batch, q_blocks, 4]`: `(lo, hi, full_lo, full_hi)` key-block bounds per query block.

  `q_len` must be a multiple of `block_q` and ranges already clipped (`_clip_ranges`). Key blocks
  `[lo, hi)` cover every key a non-empty row of the block sees; `[full_lo, full_hi)`, inside it, are
  seen completely by every row (no element mask needed). An all-empty block gets `lo = hi`.
  """
  batch, q_len = k_start_BT.shape
  start_BNR = k_start_BT.reshape(batch, q_len // block_q, block_q)
  end_BNR = k_end_BT.reshape(batch, q_len // block_q, block_q)
  nonempty_BNR = start_BNR < end_BNR
  big = jnp.iinfo(jnp.int32).max
  min_start_BN = jnp.min(jnp.where(nonempty_BNR, start_BNR, big), axis=-1)
  max_end_BN = jnp.max(jnp.where(nonempty_BNR, end_BNR, 0), axis=-1)
  any_BN = jnp.any(nonempty_BNR, axis=-1)
  lo_BN = jnp.where(any_BN, min_start_BN // block_k, 0)
  hi_BN = jnp.where(any_BN, -(-max_end_BN // block_k), 0)
  # Fully seen blocks lie inside [max start, min end) over *all* rows (an empty row has none).
  full_lo_BN = jnp.clip(-(-jnp.max(start_BNR, axis=-1) // block_k), lo_BN, hi_BN)
  full_hi_BN = jnp.clip(jnp.min(end_BNR, axis=-1) // block_k, full_lo_BN, hi_BN)
  return jnp.stack([lo_BN, hi_BN, full_lo_BN, full_hi_BN], axis=-1).astype(jnp.int32)


def _transpose_table(table_BN4, num_k_blocks):
  """int32 `[batch, k_blocks, 4]`: `(first, last, full_first, full_last)` query blocks per key
  block.

  Query blocks `[first, last)` include every one that visits the key block; `[full_first,
  full_last)`, inside it, is a run of query blocks that all see the key block completely. Blocks
  in between that do not visit it are computed masked (zero contribution): exact for any ranges,
  and for the monotone ranges mixjax builds (causal, packed, prefix-LM) there are none.
  """
  num_q_blocks = table_BN4.shape[1]
  col = lambda c: table_BN4[..., c:c + 1]
  j_11M = jnp.arange(num_k_blocks, dtype=jnp.int32)[None, None, :]
  visits_BNM = (col(0) <= j_11M) & (j_11M < col(1))
  full_BNM = (col(2) <= j_11M) & (j_11M < col(3))
  i_1N1 = jnp.arange(num_q_blocks, dtype=jnp.int32)[None, :, None]
  first_BM = jnp.min(jnp.where(visits_BNM, i_1N1, num_q_blocks), axis=1)
  last_BM = jnp.max(jnp.where(visits_BNM, i_1N1 + 1, 0), axis=1)
  first_BM = jnp.minimum(first_BM, last_BM)
  full_first_BM = jnp.clip(jnp.min(jnp.where(full_BNM, i_1N1, num_q_blocks), axis=1),
                           first_BM, last_BM)
  # The run ends at the first non-full query block after full_first.
  gap_BNM = ~full_BNM & (i_1N1 > full_first_BM[:, None, :])
  full_last_BM = jnp.clip(jnp.min(jnp.where(gap_BNM, i_1N1, num_q_blocks), axis=1),
                          full_first_BM, last_BM)
  return jnp.stack([first_BM, last_BM, full_first_BM, full_last_BM], axis=-1).astype(jnp.int32)


def num_visited_blocks(k_start_BT, k_end_BT, block_q, block_k):
  """How many (query block, key block) tiles the forward kernel computes, summed over the batch.

  The same table drives the kernels, so `visited × block_q × block_k` is the work actually done;
  benchmarks divide by the causal count to report what a mask costs. Pads `q_len` like the kernel.
  """
  q_len = k_start_BT.shape[1]
  pad = common.round_up(q_len, block_q) - q_len
  k_start_BT, k_end_BT = _clip_ranges(k_start_BT, k_end_BT)
  k_start_BT = jnp.pad(k_start_BT, ((0, 0), (0, pad)))
  k_end_BT = jnp.pad(k_end_BT, ((0, 0), (0, pad)))
  table_BN4 = block_table(k_start_BT, k_end_BT, block_q, block_k)
  return jnp.sum(table_BN4[..., 1] - table_BN4[..., 0])


# ----------------------------------------------------------------------------------------------
# Kernel bodies (shared by every backend). Refs are already sliced to one (batch, head) by the
# block specs; tables are flat int32 vectors indexed by (batch, block).


def _read_table(table_ref, row, width):
  base = row * width
  return [table_ref[base + c] for c in range(width)]


def _range_mask(start, end, pos):
  """True where key position `pos` lies in the query's range `[start, end)` (broadcasting)."""
  return (pos >= start) & (pos < end)


def _three_phase_loop(lo, hi, full_lo, full_hi, step, carry):
  """Runs `step(j, carry, masked)` over key blocks [lo, hi), unmasked on [full_lo, full_hi)."""
  carry = lax.fori_loop(lo, full_lo, functools.partial(step, masked=True), carry)
  carry = lax.fori_loop(full_lo, full_hi, functools.partial(step, masked=False), carry)
  return lax.fori_loop(full_hi, hi, functools.partial(step, masked=True), carry)


def _fwd_kernel(table_ref, q_ref, k_ref, v_ref, start_ref, end_ref, o_ref, lse_ref, *,
                scale, block_k, num_q_blocks):
  """One (batch, head, query block): online softmax over the visited key blocks.

  q_ref/o_ref `[block_q, D]`, k_ref/v_ref `[S, D]`, start/end/lse refs `[block_q, 1]`.
  """
  b, i = pl.program_id(0), pl.program_id(2)
  lo, hi, full_lo, full_hi = _read_table(table_ref, b * num_q_blocks + i, _TABLE_WIDTH)
  q_MD = q_ref[...]
  start_M1, end_M1 = start_ref[...], end_ref[...]
  scale2 = scale * common.LOG2_E

  def step(j, state, masked):
    keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    k_ND, v_ND = k_ref[keys, :], v_ref[keys, :]
    s_MN = common.dot_nt(q_MD, k_ND) * scale2
    if masked:
      pos_1N = j * block_k + lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
      s_MN = jnp.where(_range_mask(start_M1, end_M1, pos_1N), s_MN, -jnp.inf)
    return common.softmax_update(state, s_MN, v_ND, may_be_empty=masked)

  state = _three_phase_loop(lo, hi, full_lo, full_hi, step, common.softmax_init(*q_MD.shape))
  out_MD, lse_M1, seen_M1 = common.softmax_finish(state)
  o_ref[...] = out_MD.astype(o_ref.dtype)
  # +inf for empty rows makes exp2(s - lse) vanish in the backward pass.
  lse_ref[...] = jnp.where(seen_M1, lse_M1, jnp.inf)


def _dq_kernel(table_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, start_ref, end_ref,
               dq_ref, *, scale, block_k, num_q_blocks):
  """dQ for one (batch, head, query block); same loop as the forward pass."""
  b, i = pl.program_id(0), pl.program_id(2)
  lo, hi, full_lo, full_hi = _read_table(table_ref, b * num_q_blocks + i, _TABLE_WIDTH)
  q_MD, do_MD = q_ref[...], do_ref[...]
  lse_M1, delta_M1 = lse_ref[...], delta_ref[...]
  start_M1, end_M1 = start_ref[...], end_ref[...]
  scale2 = scale * common.LOG2_E

  def step(j, dq_MD, masked):
    keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    k_ND, v_ND = k_ref[keys, :], v_ref[keys, :]
    p_MN = jnp.exp2(common.dot_nt(q_MD, k_ND) * scale2 - lse_M1)
    if masked:
      pos_1N = j * block_k + lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
      p_MN = jnp.where(_range_mask(start_M1, end_M1, pos_1N), p_MN, 0.0)
    ds_MN = p_MN * (common.dot_nt(do_MD, v_ND) - delta_M1)
    return dq_MD + common.dot_nn(ds_MN.astype(k_ND.dtype), k_ND)

  dq_MD = _three_phase_loop(lo, hi, full_lo, full_hi, step,
                            jnp.zeros(q_MD.shape, jnp.float32))
  dq_ref[...] = (dq_MD * scale).astype(dq_ref.dtype)


def _dkv_kernel(key_table_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref,
                start_ref, end_ref, dk_ref, dv_ref, *, scale, block_q, group, num_k_blocks):
  """dK, dV for one (batch, kv head, key block), summed over the group's query heads.

  q_ref/do_ref `[T, group * D]`, lse/delta refs `[group, 1, T]`,
  start/end refs `[1, T]`, k/v/dk/dv refs `[block_k, D]`. Works transposed (keys on rows, queries
  on lanes) so no tile needs a transpose.
  """
  b, j = pl.program_id(0), pl.program_id(2)
  first, last, full_first, full_last = _read_table(
      key_table_ref, b * num_k_blocks + j, _TABLE_WIDTH)
  k_ND, v_ND = k_ref[...], v_ref[...]
  block_k, head_dim = k_ND.shape
  scale2 = scale * common.LOG2_E
  pos_N1 = j * block_k + lax.broadcasted_iota(jnp.int32, (block_k, 1), 0)

  def tile(i, carry, masked, g):
    dk_ND, dv_ND = carry
    rows = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
    cols = pl.ds(pl.multiple_of(g * head_dim, head_dim), head_dim)
    q_MD, do_MD = q_ref[rows, cols], do_ref[rows, cols]
    lse_1M, delta_1M = lse_ref[g, :, rows], delta_ref[g, :, rows]
    pt_NM = jnp.exp2(common.dot_nt(k_ND, q_MD) * scale2 - lse_1M)
    if masked:
      start_1M, end_1M = start_ref[:, rows], end_ref[:, rows]
      pt_NM = jnp.where(_range_mask(start_1M, end_1M, pos_N1), pt_NM, 0.0)
    dv_ND = dv_ND + common.dot_nn(pt_NM.astype(do_MD.dtype), do_MD)
    dst_NM = pt_NM * (common.dot_nt(v_ND, do_MD) - delta_1M)
    dk_ND = dk_ND + common.dot_nn(dst_NM.astype(q_MD.dtype), q_MD)
    return dk_ND, dv_ND

  def head(g, carry):
    step = functools.partial(tile, g=g)
    return _three_phase_loop(first, last, full_first, full_last, step, carry)

  zeros_ND = jnp.zeros(k_ND.shape, jnp.float32)
  dk_ND, dv_ND = lax.fori_loop(0, group, head, (zeros_ND, zeros_ND))
  dk_ref[...] = (dk_ND * scale).astype(dk_ref.dtype)
  dv_ref[...] = dv_ND.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------------------------
# Launchers. Arrays here are padded: q_len a multiple of every query tile, kv_len of every key tile,
# head_dim to the platform's multiple. The kernels see `[B, T, H * D]` (a free reshape) tiled in
# `[rows, D]` column blocks, so one layout serves Triton (strided tiles) and Mosaic TPU (whose tiles
# need `D % 128 == 0` in the lane dimension) with no transposes.


@dataclasses.dataclass(frozen=True)
class _Config:
  scale: float
  block_sizes: BlockSizes
  platform: common.Platform
  interpret: bool
  head_dim: int  # padded


def _flat(x_BTHD):
  return x_BTHD.reshape(*x_BTHD.shape[:2], -1)


def _pallas(cfg, kernel, *, grid, in_specs, out_specs, out_shape, name, backward=False):
  bs = cfg.block_sizes
  num_warps, num_stages = ((bs.num_warps_bwd, bs.num_stages_bwd) if backward
                           else (bs.num_warps, bs.num_stages))
  num_warps = num_warps or (4 if cfg.head_dim <= 64 else 8)
  return pl.pallas_call(
      kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
      compiler_params=cfg.platform.compiler_params(num_warps, num_stages, len(grid)),
      interpret=cfg.interpret, name=name)


def _query_grid_specs(q_BTHD, k_BSKD, block_q):
  """Specs shared by the kernels whose grid is (batch, q head, query block)."""
  _, _, num_heads, head_dim = q_BTHD.shape
  _, kv_len, num_kv_heads, _ = k_BSKD.shape
  group = num_heads // num_kv_heads
  rows = pl.BlockSpec((None, block_q, head_dim), lambda b, h, i: (b, i, h))
  # lax.div, not `//`: floor division of signed ints lowers via `sign`, which Mosaic rejects here.
  keys = pl.BlockSpec((None, kv_len, head_dim), lambda b, h, i: (b, 0, lax.div(h, group)))
  ranges = pl.BlockSpec((None, block_q, 1), lambda b, h, i: (b, i, 0))
  stats = pl.BlockSpec((None, None, block_q, 1), lambda b, h, i: (b, h, i, 0))
  return rows, keys, ranges, stats


def _forward(q_BTHD, k_BSKD, v_BSKD, start_BT, end_BT, cfg):
  """Returns `(out_BTHD, lse_BHT1)`; lse in base 2, +inf on empty rows."""
  if cfg.platform.stream_kv_blocks:
    return _streamed_forward(q_BTHD, k_BSKD, v_BSKD, start_BT, end_BT, cfg)
  batch, q_len, num_heads, _ = q_BTHD.shape
  block_q, block_k = cfg.block_sizes.block_q, cfg.block_sizes.block_k
  num_q_blocks = q_len // block_q
  table = block_table(start_BT, end_BT, block_q, block_k).reshape(-1)
  rows, keys, ranges, stats = _query_grid_specs(q_BTHD, k_BSKD, block_q)
  kernel = functools.partial(_fwd_kernel, scale=cfg.scale, block_k=block_k,
                             num_q_blocks=num_q_blocks)
  out_BTF, lse_BHT1 = _pallas(
      cfg, kernel, grid=(batch, num_heads, num_q_blocks),
      in_specs=[cfg.platform.table_spec(), rows, keys, keys, ranges, ranges],
      out_specs=[rows, stats],
      out_shape=[jax.ShapeDtypeStruct(_flat(q_BTHD).shape, q_BTHD.dtype),
                 jax.ShapeDtypeStruct((batch, num_heads, q_len, 1), jnp.float32)],
      name="flash_attention_fwd",
  )(table, _flat(q_BTHD), _flat(k_BSKD), _flat(v_BSKD), start_BT[..., None], end_BT[..., None])
  return out_BTF.reshape(q_BTHD.shape), lse_BHT1


def _backward_dq(q_BTHD, k_BSKD, v_BSKD, do_BTHD, lse_BHT1, delta_BHT1, start_BT, end_BT, cfg):
  batch, q_len, num_heads, _ = q_BTHD.shape
  block_q, block_k = cfg.block_sizes.block_q_dq, cfg.block_sizes.block_k_dq
  num_q_blocks = q_len // block_q
  table = block_table(start_BT, end_BT, block_q, block_k).reshape(-1)
  rows, keys, ranges, stats = _query_grid_specs(q_BTHD, k_BSKD, block_q)
  kernel = functools.partial(_dq_kernel, scale=cfg.scale, block_k=block_k,
                             num_q_blocks=num_q_blocks)
  dq_BTF = _pallas(
      cfg, kernel, grid=(batch, num_heads, num_q_blocks),
      in_specs=[cfg.platform.table_spec(), rows, keys, keys, rows, stats, stats, ranges, ranges],
      out_specs=rows,
      out_shape=jax.ShapeDtypeStruct(_flat(q_BTHD).shape, q_BTHD.dtype),
      name="flash_attention_dq", backward=True,
  )(table, _flat(q_BTHD), _flat(k_BSKD), _flat(v_BSKD), _flat(do_BTHD), lse_BHT1, delta_BHT1,
    start_BT[..., None], end_BT[..., None])
  return dq_BTF.reshape(q_BTHD.shape)


def _backward_dkv(q_BTHD, k_BSKD, v_BSKD, do_BTHD, lse_BHT1, delta_BHT1, start_BT, end_BT, cfg):
  batch, q_len, num_heads, head_dim = q_BTHD.shape
  _, kv_len, num_kv_heads, _ = k_BSKD.shape
  group = num_heads // num_kv_heads
  block_q, block_k = cfg.block_sizes.block_q_dkv, cfg.block_sizes.block_k_dkv
  num_k_blocks = kv_len // block_k
  table_BN4 = block_table(start_BT, end_BT, block_q, block_k)
  key_table = _transpose_table(table_BN4, num_k_blocks).reshape(-1)
  queries = pl.BlockSpec((None, q_len, group * head_dim), lambda b, h, j: (b, 0, h))
  keys = pl.BlockSpec((None, block_k, head_dim), lambda b, h, j: (b, j, h))
  stats = pl.BlockSpec((None, group, 1, q_len), lambda b, h, j: (b, h, 0, 0))
  ranges = pl.BlockSpec((None, 1, q_len), lambda b, h, j: (b, 0, 0))
  table = cfg.platform.table_spec()
  kernel = functools.partial(
      _dkv_kernel, scale=cfg.scale, block_q=block_q, group=group, num_k_blocks=num_k_blocks)
  # [B, H, T, 1] and [B, H, 1, T] are the same bytes: this kernel wants query stats along lanes.
  as_row = lambda x: x.reshape(batch, num_heads, 1, q_len)
  dk_BSF, dv_BSF = _pallas(
      cfg, kernel, grid=(batch, num_kv_heads, num_k_blocks),
      in_specs=[table, queries, keys, keys, queries, stats, stats, ranges, ranges],
      out_specs=[keys, keys],
      out_shape=[jax.ShapeDtypeStruct(_flat(k_BSKD).shape, k_BSKD.dtype)] * 2,
      name="flash_attention_dkv", backward=True,
  )(key_table, _flat(q_BTHD), _flat(k_BSKD), _flat(v_BSKD), _flat(do_BTHD), as_row(lse_BHT1),
    as_row(delta_BHT1), start_BT[:, None, :], end_BT[:, None, :])
  return dk_BSF.reshape(k_BSKD.shape), dv_BSF.reshape(v_BSKD.shape)


# ----------------------------------------------------------------------------------------------
# Streamed launch (TPU). The kernels above hold a whole row of K/V (or of Q) in fast memory: fine
# at a few thousand keys, a VMEM overflow on TPU at 32k. Here the visited blocks stream through
# the grid instead: the innermost grid axis walks steps 0, 1, ... of a block row, and the K/V
# (dK/dV: Q/dO) BlockSpecs' index maps read the block table from scalar prefetch (SMEM) to fetch
# block `lo + step`. Steps past the row's last visited block map to that same block, which
# Pallas does not fetch again, and compute nothing; so only visited blocks are read and no array
# of size T sits in VMEM. The online-softmax state lives in VMEM scratch across the steps.


def _streamed_block(table_ref, row, step):
  """Block `lo + step` of table row `row`, clamped to the row's last visited block."""
  base = row * _TABLE_WIDTH
  lo, hi = table_ref[base], table_ref[base + 1]
  return lo + jnp.minimum(step, jnp.maximum(hi - lo - 1, 0))


def _streamed_step(table_ref, row, step, body):
  """Runs `body(block, masked)` for visited block `lo + step`, masked outside the full run."""
  lo, hi, full_lo, full_hi = _read_table(table_ref, row, _TABLE_WIDTH)
  block = lo + step
  full = (block >= full_lo) & (block < full_hi)

  @pl.when((block < hi) & full)
  def _():
    body(block, masked=False)

  @pl.when((block < hi) & ~full)
  def _():
    body(block, masked=True)


def _row_sees_block(start_ref, end_ref, block, block_k):
  """`[block_q, block_k]` mask: query row's range holds the key at each position of `block`."""
  pos_1N = block * block_k + lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
  return _range_mask(start_ref[...], end_ref[...], pos_1N)


def _streamed_fwd_kernel(table_ref, q_ref, k_ref, v_ref, start_ref, end_ref, o_ref, lse_ref,
                         acc_ref, max_ref, sum_ref, *, scale, num_q_blocks):
  """Grid (batch, head, query block, step); q/o `[block_q, D]`, k/v `[block_k, D]`."""
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  block_k = k_ref.shape[0]

  @pl.when(j == 0)  # a new row block: fresh softmax state
  def _():
    acc, mx, sm = common.softmax_init(*acc_ref.shape)
    acc_ref[...], max_ref[...], sum_ref[...] = acc, mx, sm

  def body(block, masked):
    s_MN = common.dot_nt(q_ref[...], k_ref[...]) * (scale * common.LOG2_E)
    if masked:
      s_MN = jnp.where(_row_sees_block(start_ref, end_ref, block, block_k), s_MN, -jnp.inf)
    state = (acc_ref[...], max_ref[...], sum_ref[...])
    acc, mx, sm = common.softmax_update(state, s_MN, v_ref[...], may_be_empty=masked)
    acc_ref[...], max_ref[...], sum_ref[...] = acc, mx, sm

  _streamed_step(table_ref, b * num_q_blocks + i, j, body)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    out_MD, lse_M1, seen_M1 = common.softmax_finish((acc_ref[...], max_ref[...], sum_ref[...]))
    o_ref[...] = out_MD.astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen_M1, lse_M1, jnp.inf)


def _streamed_dq_kernel(table_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, start_ref,
                        end_ref, dq_ref, acc_ref, *, scale, num_q_blocks):
  """dQ, grid (batch, head, query block, step) like the forward pass."""
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  block_k = k_ref.shape[0]

  @pl.when(j == 0)
  def _():
    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

  def body(block, masked):
    k_ND = k_ref[...]
    p_MN = jnp.exp2(common.dot_nt(q_ref[...], k_ND) * (scale * common.LOG2_E) - lse_ref[...])
    if masked:
      p_MN = jnp.where(_row_sees_block(start_ref, end_ref, block, block_k), p_MN, 0.0)
    ds_MN = p_MN * (common.dot_nt(do_ref[...], v_ref[...]) - delta_ref[...])
    acc_ref[...] += common.dot_nn(ds_MN.astype(k_ND.dtype), k_ND)

  _streamed_step(table_ref, b * num_q_blocks + i, j, body)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    dq_ref[...] = (acc_ref[...] * scale).astype(dq_ref.dtype)


def _streamed_dkv_kernel(key_table_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref,
                         start_ref, end_ref, dk_ref, dv_ref, dk_acc_ref, dv_acc_ref, *, scale,
                         num_k_blocks):
  """dK, dV, grid (batch, kv head, key block, group member, step): the query blocks that visit
  this key block stream by, for each q head of the group; transposed as in `_dkv_kernel`.

  q/do `[block_q, D]`, lse/delta `[1, block_q]`, start/end `[1, block_q]`, k/v `[block_k, D]`.
  """
  b, j, g, i = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)
  block_k = k_ref.shape[0]

  @pl.when((g == 0) & (i == 0))
  def _():
    dk_acc_ref[...] = jnp.zeros(dk_acc_ref.shape, jnp.float32)
    dv_acc_ref[...] = jnp.zeros(dv_acc_ref.shape, jnp.float32)

  def body(query_block, masked):
    del query_block  # its rows' ranges come in through start_ref / end_ref
    q_MD, do_MD, k_ND = q_ref[...], do_ref[...], k_ref[...]
    pt_NM = jnp.exp2(common.dot_nt(k_ND, q_MD) * (scale * common.LOG2_E) - lse_ref[...])
    if masked:
      pos_N1 = j * block_k + lax.broadcasted_iota(jnp.int32, (block_k, 1), 0)
      pt_NM = jnp.where(_range_mask(start_ref[...], end_ref[...], pos_N1), pt_NM, 0.0)
    dv_acc_ref[...] += common.dot_nn(pt_NM.astype(do_MD.dtype), do_MD)
    dst_NM = pt_NM * (common.dot_nt(v_ref[...], do_MD) - delta_ref[...])
    dk_acc_ref[...] += common.dot_nn(dst_NM.astype(q_MD.dtype), q_MD)

  _streamed_step(key_table_ref, b * num_k_blocks + j, i, body)

  @pl.when((g == pl.num_programs(3) - 1) & (i == pl.num_programs(4) - 1))
  def _():
    dk_ref[...] = (dk_acc_ref[...] * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_acc_ref[...].astype(dv_ref.dtype)


def _streamed_call(cfg, kernel, *, grid, in_specs, out_specs, out_shape, scratch, name,
                   num_parallel):
  semantics = ("parallel",) * num_parallel + ("arbitrary",) * (len(grid) - num_parallel)
  return pl.pallas_call(
      kernel, out_shape=out_shape,
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1, grid=grid, in_specs=in_specs, out_specs=out_specs,
          scratch_shapes=[pltpu.VMEM(shape, jnp.float32) for shape in scratch]),
      compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
      interpret=cfg.interpret, name=name)


def _streamed_query_specs(q_BTHD, k_BSKD, block_q, block_k, num_q_blocks):
  """Specs of the grid (batch, q head, query block, step): rows, streamed keys, ranges, stats."""
  head_dim = q_BTHD.shape[3]
  group = q_BTHD.shape[2] // k_BSKD.shape[2]
  rows = pl.BlockSpec((None, block_q, head_dim), lambda b, h, i, j, t: (b, i, h))
  keys = pl.BlockSpec(
      (None, block_k, head_dim),
      lambda b, h, i, j, t: (b, _streamed_block(t, b * num_q_blocks + i, j), lax.div(h, group)))
  ranges = pl.BlockSpec((None, block_q, 1), lambda b, h, i, j, t: (b, i, 0))
  stats = pl.BlockSpec((None, None, block_q, 1), lambda b, h, i, j, t: (b, h, i, 0))
  return rows, keys, ranges, stats


def _streamed_forward(q_BTHD, k_BSKD, v_BSKD, start_BT, end_BT, cfg):
  batch, q_len, num_heads, head_dim = q_BTHD.shape
  block_q, block_k = cfg.block_sizes.block_q, cfg.block_sizes.block_k
  num_q_blocks, num_k_blocks = q_len // block_q, k_BSKD.shape[1] // block_k
  table = block_table(start_BT, end_BT, block_q, block_k).reshape(-1)
  rows, keys, ranges, stats = _streamed_query_specs(q_BTHD, k_BSKD, block_q, block_k,
                                                    num_q_blocks)
  out_BTF, lse_BHT1 = _streamed_call(
      cfg, functools.partial(_streamed_fwd_kernel, scale=cfg.scale, num_q_blocks=num_q_blocks),
      grid=(batch, num_heads, num_q_blocks, num_k_blocks),
      in_specs=[rows, keys, keys, ranges, ranges], out_specs=[rows, stats],
      out_shape=[jax.ShapeDtypeStruct(_flat(q_BTHD).shape, q_BTHD.dtype),
                 jax.ShapeDtypeStruct((batch, num_heads, q_len, 1), jnp.float32)],
      scratch=[(block_q, head_dim), (block_q, 1), (block_q, 1)], num_parallel=3,
      name="flash_attention_fwd_streamed",
  )(table, _flat(q_BTHD), _flat(k_BSKD), _flat(v_BSKD), start_BT[..., None], end_BT[..., None])
  return out_BTF.reshape(q_BTHD.shape), lse_BHT1


def _streamed_backward_dq(q_BTHD, k_BSKD, v_BSKD, do_BTHD, lse_BHT1, delta_BHT1, start_BT,
                          end_BT, cfg):
  batch, q_len, num_heads, head_dim = q_BTHD.shape
  block_q, block_k = cfg.block_sizes.block_q_dq, cfg.block_sizes.block_k_dq
  num_q_blocks, num_k_blocks = q_len // block_q, k_BSKD.shape[1] // block_k
  table = block_table(start_BT, end_BT, block_q, block_k).reshape(-1)
  rows, keys, ranges, stats = _streamed_query_specs(q_BTHD, k_BSKD, block_q, block_k,
                                                    num_q_blocks)
  dq_BTF = _streamed_call(
      cfg, functools.partial(_streamed_dq_kernel, scale=cfg.scale, num_q_blocks=num_q_blocks),
      grid=(batch, num_heads, num_q_blocks, num_k_blocks),
      in_specs=[rows, keys, keys, rows, stats, stats, ranges, ranges], out_specs=rows,
      out_shape=jax.ShapeDtypeStruct(_flat(q_BTHD).shape, q_BTHD.dtype),
      scratch=[(block_q, head_dim)], num_parallel=3, name="flash_attention_dq_streamed",
  )(table, _flat(q_BTHD), _flat(k_BSKD), _flat(v_BSKD), _flat(do_BTHD), lse_BHT1, delta_BHT1,
    start_BT[..., None], end_BT[..., None])
  return dq_BTF.reshape(q_BTHD.shape)


def _streamed_backward_dkv(q_BTHD, k_BSKD, v_BSKD, do_BTHD, lse_BHT1, delta_BHT1, start_BT,
                           end_BT, cfg):
  batch, q_len, num_heads, head_dim = q_BTHD.shape
  _, kv_len, num_kv_heads, _ = k_BSKD.shape
  group = num_heads // num_kv_heads
  block_q, block_k = cfg.block_sizes.block_q_dkv, cfg.block_sizes.block_k_dkv
  num_q_blocks, num_k_blocks = q_len // block_q, kv_len // block_k
  key_table = _transpose_table(block_table(start_BT, end_BT, block_q, block_k),
                               num_k_blocks).reshape(-1)
  q_block = lambda b, j, i, t: _streamed_block(t, b * num_k_blocks + j, i)  # noqa: E731
  queries = pl.BlockSpec((None, block_q, head_dim),
                         lambda b, h, j, g, i, t: (b, q_block(b, j, i, t), h * group + g))
  keys = pl.BlockSpec((None, block_k, head_dim), lambda b, h, j, g, i, t: (b, j, h))
  stats = pl.BlockSpec((None, None, 1, block_q),
                       lambda b, h, j, g, i, t: (b, h * group + g, 0, q_block(b, j, i, t)))
  ranges = pl.BlockSpec((None, 1, block_q), lambda b, h, j, g, i, t: (b, 0, q_block(b, j, i, t)))
  as_row = lambda x: x.reshape(batch, num_heads, 1, q_len)  # noqa: E731  (same bytes)
  dk_BSF, dv_BSF = _streamed_call(
      cfg, functools.partial(_streamed_dkv_kernel, scale=cfg.scale, num_k_blocks=num_k_blocks),
      grid=(batch, num_kv_heads, num_k_blocks, group, num_q_blocks),
      in_specs=[queries, keys, keys, queries, stats, stats, ranges, ranges],
      out_specs=[keys, keys],
      out_shape=[jax.ShapeDtypeStruct(_flat(k_BSKD).shape, k_BSKD.dtype)] * 2,
      scratch=[(block_k, head_dim), (block_k, head_dim)], num_parallel=3,
      name="flash_attention_dkv_streamed",
  )(key_table, _flat(q_BTHD), _flat(k_BSKD), _flat(v_BSKD), _flat(do_BTHD), as_row(lse_BHT1),
    as_row(delta_BHT1), start_BT[:, None, :], end_BT[:, None, :])
  return dk_BSF.reshape(k_BSKD.shape), dv_BSF.reshape(v_BSKD.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, start_BT, end_BT, cfg):
  return _forward(q, k, v, start_BT, end_BT, cfg)[0]


def _flash_fwd(q, k, v, start_BT, end_BT, cfg):
  out, lse_BHT1 = _forward(q, k, v, start_BT, end_BT, cfg)
  return out, (q, k, v, start_BT, end_BT, out, lse_BHT1)


def _flash_bwd(cfg, residuals, do):
  q, k, v, start_BT, end_BT, out, lse_BHT1 = residuals
  # delta = rowsum(dO * O): one fused XLA pass, read by both backward kernels.
  delta_BTH = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
  delta_BHT1 = jnp.transpose(delta_BTH, (0, 2, 1))[..., None]
  args = (q, k, v, do, lse_BHT1, delta_BHT1, start_BT, end_BT, cfg)
  if cfg.platform.stream_kv_blocks:
    dq, (dk, dv) = _streamed_backward_dq(*args), _streamed_backward_dkv(*args)
  else:
    dq, (dk, dv) = _backward_dq(*args), _backward_dkv(*args)
  return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, *, scale=None, interpret=None,
                    block_sizes=None, platform=None):
  """Pallas flash attention over per-row key ranges; same numbers as `reference_flash_attention`.

  Args:
    q_BTHD: `[batch, q_len, q_heads, head_dim]`, float32 or bfloat16.
    k_BSKD, v_BSKD: `[batch, kv_len, kv_heads, head_dim]`, kv_heads dividing q_heads.
    k_start_BT, k_end_BT: int `[batch, q_len]`; row t attends to keys `[k_start, k_end)`.
    scale: logit scale; default `head_dim ** -0.5`.
    interpret: run the kernels in the Pallas interpreter; default: only on CPU.
    block_sizes: `BlockSizes`; default: the platform's. Tiles shrink for short sequences.
    platform: `'gpu' | 'tpu' | 'cpu'`, the launch recipe; default `jax.default_backend()`.

  Returns:
    `[batch, q_len, q_heads, head_dim]` in q's dtype; rows with an empty range are zeros.
    Differentiable in q, k and v (custom VJP with Pallas backward kernels).
  """
  batch, q_len, num_heads, head_dim = q_BTHD.shape
  _, kv_len, num_kv_heads, _ = k_BSKD.shape
  if k_BSKD.shape != v_BSKD.shape or k_BSKD.shape[0] != batch or k_BSKD.shape[3] != head_dim:
    raise ValueError(f"k {k_BSKD.shape} and v {v_BSKD.shape} must both be [batch={batch}, "
                     f"kv_len, kv_heads, head_dim={head_dim}] for q {q_BTHD.shape}.")
  if num_heads % num_kv_heads:
    raise ValueError(f"kv_heads={num_kv_heads} must divide q_heads={num_heads}.")
  if k_start_BT.shape != (batch, q_len) or k_end_BT.shape != (batch, q_len):
    raise ValueError(f"k_start {k_start_BT.shape} and k_end {k_end_BT.shape} must be "
                     f"[batch, q_len] = {(batch, q_len)}.")
  plat, interpret = common.resolve_platform(platform, interpret)
  bs = plat.block_sizes if block_sizes is None else block_sizes
  fit_q = functools.partial(_fit_block, length=q_len, minimum=plat.min_block_q)
  fit_k = functools.partial(_fit_block, length=kv_len, minimum=plat.min_block_k)
  bs = dataclasses.replace(
      bs, block_q=fit_q(bs.block_q), block_q_dq=fit_q(bs.block_q_dq),
      block_q_dkv=fit_q(bs.block_q_dkv), block_k=fit_k(bs.block_k),
      block_k_dq=fit_k(bs.block_k_dq), block_k_dkv=fit_k(bs.block_k_dkv))
  padded_dim = plat.pad_head_dim(head_dim)
  cfg = _Config(
      scale=float(head_dim**-0.5 if scale is None else scale), block_sizes=bs, platform=plat,
      interpret=interpret, head_dim=padded_dim)
  # Pad to whole tiles: padded query rows get empty ranges, padded keys are never in a range.
  q_pad = common.round_up(q_len, max(bs.block_q, bs.block_q_dq, bs.block_q_dkv)) - q_len
  kv_pad = common.round_up(kv_len, max(bs.block_k, bs.block_k_dq, bs.block_k_dkv)) - kv_len
  d_pad = padded_dim - head_dim
  start_BT, end_BT = _clip_ranges(k_start_BT, k_end_BT, kv_len)
  start_BT, end_BT = (jnp.pad(x, ((0, 0), (0, q_pad))) for x in (start_BT, end_BT))
  q = jnp.pad(q_BTHD, ((0, 0), (0, q_pad), (0, 0), (0, d_pad)))
  k, v = (jnp.pad(x, ((0, 0), (0, kv_pad), (0, 0), (0, d_pad))) for x in (k_BSKD, v_BSKD))
  return _flash(q, k, v, start_BT, end_BT, cfg)[:, :q_len, :, :head_dim]
