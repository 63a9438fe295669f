"""Token sampling (temperature, top-k, top-p, min-p) as one Pallas kernel, without sorting.

What is sampled, per row (the reference spells it out with a sort):
  1. `x = logits / temperature`; temperature 0 means greedy (first index of the max logit).
  2. top-k (`top_k > 0`): keep the k largest x; among equal values the lower index wins, so the set
     is exactly `lax.top_k`'s (which orders floats totally: -0.0 < +0.0).
  3. top-p (`top_p < 1`): with probabilities renormalised over the top-k set, keep token i iff the
     tokens strictly more probable than i hold less than `top_p` of the mass (the smallest nucleus
     reaching `top_p`, plus every token tied with its last one).
  4. min-p (`min_p > 0`): keep tokens with `p_i >= min_p * p_max`.
  5. Draw from softmax(x) restricted to what is kept.

How the kernel avoids a sort. A program owns one row and streams it in `block_v` chunks. Floats are
mapped to order-preserving int32 keys, and each threshold (the k-th largest key, the top-p cut, the
index cut among top-k ties) is found by a radix search: `32 / radix_bits` passes, each testing
`2**radix_bits` pivots at once (counting keys, or summing probability mass, above each). A pass
skips chunks whose maximum (recorded in the first pass) lies below the search's current lower
bound, so with a peaked distribution or a small k most of the vocabulary is read once. The draw is
a Gumbel-max over kept tokens with counter-based hashed noise (no noise array in memory).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from mixjax.kernels import common

_INT_MIN = np.int32(-(2**31))
_INT_MAX = np.int32(2**31 - 1)


def _wrap32(x):
  """A uint32 constant as the int32 with the same bits."""
  return np.int32(np.uint32(x).view(np.int32))


def order_keys(x):
  """int32 keys ordered like the floats `x` (totally: -0.0 < +0.0), for integer radix search."""
  bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
  return jnp.where(bits < 0, bits ^ _INT_MAX, bits)


# ----------------------------------------------------------------------------------------------
# Reference (sort-based).


@dataclasses.dataclass(frozen=True)
class _RowParams:
  """Per-row sampling parameters, `[batch]` each, normalised so the kernel needs no special cases:
  top_k 0 (or >= vocab) means off; top_p in (0, 1] (a non-positive top_p keeps the top token and its
  ties); min_p in [0, 1]."""
  temperature: jax.Array
  top_k: jax.Array
  top_p: jax.Array
  min_p: jax.Array

  @property
  def divisor(self):
    return jnp.where(self.temperature > 0, self.temperature, 1.0)


def _row_params(batch, vocab, temperature, top_k, top_p, min_p):
  for name, value, ok, valid in [
      ("temperature", temperature, lambda v: v >= 0, ">= 0 (0 is greedy)"),
      ("top_k", top_k, lambda v: v >= 0, ">= 0 (0 is off)"),
      ("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1] (1 is off)"),
      ("min_p", min_p, lambda v: 0 <= v <= 1, "in [0, 1] (0 is off)")]:
    if isinstance(value, (int, float)) and not ok(value):
      raise ValueError(f"{name}={value} must be {valid}.")
  as_rows = lambda v, dtype: jnp.broadcast_to(jnp.asarray(v, dtype), (batch,))
  top_k = as_rows(top_k, jnp.int32)
  return _RowParams(
      temperature=as_rows(temperature, jnp.float32),
      top_k=jnp.where(top_k >= vocab, 0, jnp.maximum(top_k, 0)),
      top_p=jnp.clip(as_rows(top_p, jnp.float32), np.finfo(np.float32).tiny, 1.0),
      min_p=jnp.clip(as_rows(min_p, jnp.float32), 0.0, 1.0))


def reference_sampling_mask(logits_BV, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
  """bool `[batch, vocab]`: the tokens `reference_sample` may draw (all, for greedy rows)."""
  batch, vocab = logits_BV.shape
  params = _row_params(batch, vocab, temperature, top_k, top_p, min_p)
  temperature_B1, top_k_B1 = params.temperature[:, None], params.top_k[:, None]
  top_p_B1, min_p_B1 = params.top_p[:, None], params.min_p[:, None]
  x_BV = logits_BV.astype(jnp.float32) / params.divisor[:, None]
  # Descending by key, ties by index: the order lax.top_k uses.
  order_BV = jnp.argsort(~order_keys(x_BV), axis=-1, stable=True)  # ~key: descending, no overflow.
  rank_BV = jnp.argsort(order_BV, axis=-1)
  keep_BV = (rank_BV < top_k_B1) | (top_k_B1 <= 0)
  e_BV = jnp.where(keep_BV, jnp.exp(x_BV - jnp.max(x_BV, axis=-1, keepdims=True)), 0.0)
  # Mass of tokens strictly ahead: the exclusive cumulative sum at the first of each tie run.
  sorted_x_BV = jnp.take_along_axis(x_BV, order_BV, axis=-1)
  sorted_e_BV = jnp.take_along_axis(e_BV, order_BV, axis=-1)
  ahead_BV = jnp.cumsum(sorted_e_BV, axis=-1) - sorted_e_BV
  new_run_BV = jnp.concatenate(
      [jnp.ones((batch, 1), bool),
       order_keys(sorted_x_BV[:, 1:]) != order_keys(sorted_x_BV[:, :-1])], axis=-1)
  run_start_BV = lax.cummax(jnp.where(new_run_BV, jnp.arange(vocab)[None, :], 0), axis=1)
  ahead_BV = jnp.take_along_axis(ahead_BV, run_start_BV, axis=-1)
  total_B1 = jnp.sum(e_BV, axis=-1, keepdims=True)
  nucleus_sorted_BV = (ahead_BV < top_p_B1 * total_B1) | (top_p_B1 >= 1.0)
  keep_BV &= jnp.take_along_axis(nucleus_sorted_BV, rank_BV, axis=-1)
  keep_BV &= e_BV >= min_p_B1
  return keep_BV | (temperature_B1 <= 0)


def reference_sample(key, logits_BV, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
  """int32 `[batch]` tokens: sort-based filtering, then `jax.random.categorical` (or argmax)."""
  params = _row_params(*logits_BV.shape, temperature, top_k, top_p, min_p)
  keep_BV = reference_sampling_mask(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p,
                                    min_p=min_p)
  x_BV = logits_BV.astype(jnp.float32) / params.divisor[:, None]
  sampled_B = jax.random.categorical(key, jnp.where(keep_BV, x_BV, -jnp.inf), axis=-1)
  greedy_B = jnp.argmax(logits_BV, axis=-1)
  return jnp.where(params.temperature > 0, sampled_B, greedy_B).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# Kernel.


@dataclasses.dataclass(frozen=True)
class SamplingBlockSizes:
  """`block_v` logits per chunk (a power of two); `radix_bits` bits decided per pass (1, 2, 4
  or 8: fewer passes over the row against `2**radix_bits` pivots' work per element)."""
  block_v: int = 1024
  radix_bits: int = 4
  num_warps: int = 8
  num_stages: int = 1


def _hash(x):
  """lowbias32 (C. Wellons): a well-mixed 32-bit hash; int32 products wrap mod 2**32."""
  x = x ^ lax.shift_right_logical(x, jnp.int32(16))
  x = x * _wrap32(0x7FEB352D)
  x = x ^ lax.shift_right_logical(x, jnp.int32(15))
  x = x * _wrap32(0x846CA68B)
  return x ^ lax.shift_right_logical(x, jnp.int32(16))


def _gumbel(seed0, seed1, idx):
  """Standard Gumbel noise, a pure function of (row seeds, token index)."""
  bits = _hash(_hash(idx ^ seed0) ^ seed1)
  u = (lax.shift_right_logical(bits, jnp.int32(8)).astype(jnp.float32) + 0.5) * (1.0 / 2**24)
  return -jnp.log(-jnp.log(u))


def _sample_kernel(temperature_ref, top_k_ref, top_p_ref, min_p_ref, seed_ref, logits_ref,
                   token_ref, top_k_cut_ref, tie_cut_ref, top_p_cut_ref, *, block_v, radix_bits,
                   skip_chunks):
  """One row. logits_ref `[1, V]` (V a multiple of block_v, padded with -inf); outputs `[1, 1]`:
  the token and the cuts `sampling_mask` rebuilds the kept set from (signed keys / an index)."""
  row = pl.program_id(0)
  num_chunks = logits_ref.shape[-1] // block_v
  temperature, top_k = temperature_ref[row], top_k_ref[row]
  top_p, min_p = top_p_ref[row], min_p_ref[row]
  seed0, seed1 = seed_ref[2 * row], seed_ref[2 * row + 1]
  divisor = jnp.where(temperature > 0, temperature, 1.0)
  lanes_1C = lax.broadcasted_iota(jnp.int32, (1, block_v), 1)
  chunk_ids_1N = lax.broadcasted_iota(jnp.int32, (1, pl.next_power_of_2(num_chunks)), 1)
  pivot_ids_P1 = lax.broadcasted_iota(jnp.int32, (2**radix_bits, 1), 0)

  def load(c):
    x_1C = logits_ref[:, pl.ds(pl.multiple_of(c * block_v, block_v), block_v)]
    x_1C = x_1C.astype(jnp.float32) / divisor
    return x_1C, order_keys(x_1C), c * block_v + lanes_1C

  # Pass 1: the max (and greedy argmax), and each chunk's max key for skipping later passes.
  def first(c, carry):
    best_11, arg_11, chunk_max_1N = carry
    x_1C, key_1C, idx_1C = load(c)
    max_11 = jnp.max(x_1C, keepdims=True)
    arg_c_11 = jnp.min(jnp.where(x_1C == max_11, idx_1C, _INT_MAX), keepdims=True)
    better_11 = max_11 > best_11  # Strict: the first index of the max wins, as jnp.argmax.
    chunk_max_1N = jnp.where(chunk_ids_1N == c, jnp.max(key_1C), chunk_max_1N)
    return (jnp.where(better_11, max_11, best_11), jnp.where(better_11, arg_c_11, arg_11),
            chunk_max_1N)

  max_11, arg_11, chunk_max_1N = lax.fori_loop(
      0, num_chunks, first, (jnp.full((1, 1), -jnp.inf), jnp.zeros((1, 1), jnp.int32),
                             jnp.full(chunk_ids_1N.shape, _INT_MIN)))

  def row_pass(fn, init, bound_11):
    """Folds `fn(x, key, idx, carry)` over the chunks holding a key >= bound_11."""
    def body(c, carry):
      run = lambda carry: fn(*load(c), carry)
      if not skip_chunks:
        return run(carry)
      chunk_max = jnp.max(jnp.where(chunk_ids_1N == c, chunk_max_1N, _INT_MIN))
      return lax.cond(chunk_max >= jnp.max(bound_11), run, lambda carry: carry, carry)
    return lax.fori_loop(0, num_chunks, body, init)

  def radix_search(bits, holds, bound_fn):
    """Largest unsigned `bits`-wide t (int32 bits) with `holds(pivots_P1, prefix_11)` true, where
    holds is monotone (true, then false) and true at 0; `bound_fn(prefix)` bounds useful chunks."""
    def digit(d, prefix_11):
      shift = bits - radix_bits * (d + 1)
      pivots_P1 = prefix_11 | jnp.left_shift(pivot_ids_P1, shift)
      ok_P1 = holds(pivots_P1, bound_fn(prefix_11))
      chosen_11 = jnp.sum(ok_P1.astype(jnp.int32), axis=0, keepdims=True) - 1
      return prefix_11 | jnp.left_shift(chosen_11, shift)
    return lax.fori_loop(0, bits // radix_bits, digit, jnp.zeros((1, 1), jnp.int32))

  to_signed = lambda u: u ^ _INT_MIN  # Unsigned search space <-> signed keys.
  zeros_P1 = jnp.zeros(pivot_ids_P1.shape, jnp.int32)

  def top_k_cuts():
    """(key cut, index cut): keep key > cut, or key == cut at index <= index cut."""
    def count_at_least(pivots_P1, bound_11):
      count = lambda x, key_1C, idx, n_P1: n_P1 + jnp.sum(
          (key_1C >= to_signed(pivots_P1)).astype(jnp.int32), axis=1, keepdims=True)
      return row_pass(count, zeros_P1, bound_11) >= top_k
    cut_11 = to_signed(radix_search(32, count_at_least, to_signed))
    above = lambda x, key_1C, idx, n_11: n_11 + jnp.sum(
        (key_1C > cut_11).astype(jnp.int32), keepdims=True)
    needed_11 = top_k - row_pass(above, jnp.zeros((1, 1), jnp.int32), cut_11)

    # Ties at the cut: lax.top_k takes the lowest indices, so find the index of the needed-th tie.
    def ties_before(pivots_P1, bound_11):
      count = lambda x, key_1C, idx_1C, n_P1: n_P1 + jnp.sum(
          ((key_1C == cut_11) & (idx_1C < pivots_P1)).astype(jnp.int32), axis=1, keepdims=True)
      return row_pass(count, zeros_P1, bound_11) <= needed_11 - 1
    index_bits = radix_bits * -(-max(1, (logits_ref.shape[-1] - 1).bit_length()) // radix_bits)
    return cut_11, radix_search(index_bits, ties_before, lambda prefix: cut_11)

  no_cut = (jnp.full((1, 1), _INT_MIN), jnp.full((1, 1), _INT_MAX))
  top_k_cut_11, tie_cut_11 = lax.cond(top_k > 0, top_k_cuts, lambda: no_cut)
  in_top_k = lambda key_1C, idx_1C: (key_1C > top_k_cut_11) | (
      (key_1C == top_k_cut_11) & (idx_1C <= tie_cut_11))

  def top_p_cut():
    """Key cut of the nucleus: the largest t with mass(key >= t) >= top_p * mass(top-k set)."""
    def mass(x_1C, key_1C, idx_1C, extra_1C):
      return jnp.where(in_top_k(key_1C, idx_1C) & extra_1C, jnp.exp(x_1C - max_11), 0.0)
    total = lambda x, key, idx, z_11: z_11 + jnp.sum(mass(x, key, idx, True), keepdims=True)
    target_11 = top_p * row_pass(total, jnp.zeros((1, 1)), top_k_cut_11)

    def mass_at_least(pivots_P1, bound_11):
      add = lambda x, key_1C, idx, m_P1: m_P1 + jnp.sum(
          mass(x, key_1C, idx, key_1C >= to_signed(pivots_P1)), axis=1, keepdims=True)
      return row_pass(add, jnp.zeros(pivots_P1.shape), bound_11) >= target_11
    return to_signed(radix_search(
        32, mass_at_least, lambda prefix_11: jnp.maximum(to_signed(prefix_11), top_k_cut_11)))

  top_p_cut_11 = lax.cond(top_p < 1.0, top_p_cut, lambda: no_cut[0])

  def draw(x_1C, key_1C, idx_1C, carry):
    best_11, arg_11 = carry
    keep_1C = in_top_k(key_1C, idx_1C) & (key_1C >= top_p_cut_11)
    keep_1C &= jnp.exp(x_1C - max_11) >= min_p
    score_1C = jnp.where(keep_1C, x_1C + _gumbel(seed0, seed1, idx_1C), -jnp.inf)
    chunk_best_11 = jnp.max(score_1C, keepdims=True)
    chunk_arg_11 = jnp.min(jnp.where(score_1C == chunk_best_11, idx_1C, _INT_MAX), keepdims=True)
    better_11 = chunk_best_11 > best_11
    return jnp.where(better_11, chunk_best_11, best_11), jnp.where(better_11, chunk_arg_11, arg_11)

  def sample():
    bound_11 = jnp.maximum(top_k_cut_11, top_p_cut_11)
    return row_pass(draw, (jnp.full((1, 1), -jnp.inf), arg_11), bound_11)[1]

  token_ref[...] = lax.cond(temperature > 0, sample, lambda: arg_11)
  top_k_cut_ref[...] = top_k_cut_11
  tie_cut_ref[...] = tie_cut_11
  top_p_cut_ref[...] = top_p_cut_11


def _sample_call(key, logits_BV, params, block_sizes, platform, interpret):
  """Runs the kernel: `(tokens_B, top_k_cut_B, tie_cut_B, top_p_cut_B)`."""
  plat, interpret = common.resolve_platform(platform, interpret)
  bs = SamplingBlockSizes() if block_sizes is None else block_sizes
  batch, vocab = logits_BV.shape
  block_v = min(bs.block_v, max(128, pl.next_power_of_2(vocab)))
  padded = common.round_up(vocab, block_v)
  # -inf padding: last in every order, zero mass, never drawn.
  logits_B1V = jnp.pad(logits_BV, ((0, 0), (0, padded - vocab)),
                       constant_values=-jnp.inf)[:, None, :]
  seeds = lax.bitcast_convert_type(jax.random.bits(key, (batch, 2), jnp.uint32), jnp.int32)
  table = plat.table_spec()
  scalar_out = pl.BlockSpec((None, 1, 1), lambda b: (b, 0, 0))
  kernel = functools.partial(_sample_kernel, block_v=block_v, radix_bits=bs.radix_bits,
                             skip_chunks=True)
  outs = pl.pallas_call(
      kernel, grid=(batch,),
      in_specs=[table] * 5 + [pl.BlockSpec((None, 1, padded), lambda b: (b, 0, 0))],
      out_specs=[scalar_out] * 4,
      out_shape=[jax.ShapeDtypeStruct((batch, 1, 1), jnp.int32)] * 4,
      compiler_params=plat.compiler_params(bs.num_warps, bs.num_stages, 1),
      interpret=interpret, name="sample",
  )(params.temperature, params.top_k, params.top_p, params.min_p, seeds.reshape(-1), logits_B1V)
  return tuple(out[:, 0, 0] for out in outs)


def sample(key, logits_BV, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, interpret=None,
           block_sizes=None, platform=None):
  """Draws one token per row with temperature / top-k / top-p / min-p, in one Pallas kernel.

  Args:
    key: a `jax.random` key; rows draw independent noise from it.
    logits_BV: `[batch, vocab]`, any float dtype.
    temperature, top_k, top_p, min_p: Python scalars or `[batch]` arrays (module docstring).
    interpret: run in the Pallas interpreter; default: only on CPU.
    block_sizes: `SamplingBlockSizes`.
    platform: `'gpu' | 'tpu' | 'cpu'`; default `jax.default_backend()`.

  Returns:
    int32 `[batch]` token ids, distributed as `reference_sample`'s.
  """
  params = _row_params(*logits_BV.shape, temperature, top_k, top_p, min_p)
  return _sample_call(key, logits_BV, params, block_sizes, platform, interpret)[0]


def sampling_mask(logits_BV, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, interpret=None,
                  block_sizes=None, platform=None):
  """bool `[batch, vocab]`: the kept set as the kernel's radix searches found it (for tests and
  debugging; equals `reference_sampling_mask`)."""
  batch, vocab = logits_BV.shape
  params = _row_params(batch, vocab, temperature, top_k, top_p, min_p)
  _, top_k_cut_B, tie_cut_B, top_p_cut_B = _sample_call(
      jax.random.key(0), logits_BV, params, block_sizes, platform, interpret)
  x_BV = logits_BV.astype(jnp.float32) / params.divisor[:, None]
  key_BV = order_keys(x_BV)
  idx_1V = jnp.arange(vocab, dtype=jnp.int32)[None, :]
  keep_BV = (key_BV > top_k_cut_B[:, None]) | (
      (key_BV == top_k_cut_B[:, None]) & (idx_1V <= tie_cut_B[:, None]))
  keep_BV &= key_BV >= top_p_cut_B[:, None]
  keep_BV &= jnp.exp(x_BV - jnp.max(x_BV, axis=-1, keepdims=True)) >= params.min_p[:, None]
  return keep_BV | (params.temperature[:, None] <= 0)
