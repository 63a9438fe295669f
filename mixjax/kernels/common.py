"""What more than one kernel in `mixjax.kernels` uses: backends, tiling arithmetic, online softmax.

Each kernel module imports this one and no other kernel's internals, so a kernel can be read (and
changed) alone.

Backends. One set of kernel bodies per kernel; a `Platform` per backend says how to launch them
(compiler parameters, where small int32 tables live, block-size constraints). GPU uses the Triton
lowering (explicit Triton compiler parameters: in jax >= 0.10 a bare `pallas_call` on GPU means
Mosaic GPU), TPU uses Mosaic TPU, CPU runs the GPU launch in interpret mode. A Mosaic GPU platform
would be one more `Platform` entry.

Online softmax. `softmax_init / softmax_update / softmax_finish` carry the FlashAttention-2 state
`(acc_MD, max_M1, sum_M1)` in base 2 (exp2 is the cheap instruction on GPUs): logits come in
multiplied by `LOG2_E * scale`. Suffixes: M rows held, N keys streamed, D head_dim.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

# Kernels work in base 2: s2 = log2(e) * scale * q.k.
LOG2_E = math.log2(math.e)


def round_up(x, multiple):
  """Smallest multiple of `multiple` that is >= x (ints)."""
  return -(-x // multiple) * multiple


# ----------------------------------------------------------------------------------------------
# Backends.


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Flash-attention tiles (powers of two); each of its kernels has a pair: rows held × streamed.

  Lives here because each `Platform` carries its tuned defaults; `flash_attention.BlockSizes` is
  the name callers use.

  Attributes:
    block_q, block_k: forward; a program holds `block_q` query rows and streams `block_k` keys.
    block_q_dq, block_k_dq: the dQ kernel (holds queries, streams keys).
    block_q_dkv, block_k_dkv: the dK/dV kernel (holds `block_k_dkv` keys, streams queries).
    num_warps, num_stages: GPU (Triton) only, forward kernel; `num_warps=None` picks 4 for
      head_dim <= 64, else 8.
    num_warps_bwd, num_stages_bwd: the same for the two backward kernels.
  """
  block_q: int = 128
  block_k: int = 64
  block_q_dq: int = 128
  block_k_dq: int = 32
  block_q_dkv: int = 32
  block_k_dkv: int = 128
  num_warps: int | None = None
  num_stages: int = 2
  num_warps_bwd: int | None = None
  num_stages_bwd: int = 2

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name.startswith("block_") and (value < 1 or value & (value - 1)):
        raise ValueError(f"BlockSizes.{field.name}={value} must be a positive power of two.")


@dataclasses.dataclass(frozen=True)
class Platform:
  """How the kernel bodies are launched on one backend.

  Attributes:
    name: the `jax.default_backend()` name it serves.
    block_sizes: flash-attention defaults, tuned for the backend's flagship chip.
    min_block_q, min_block_k: smallest tiles the backend's matmul unit accepts.
    pad_head_dim: head_dim -> the padded head_dim the backend's tiles accept.
    table_memory_space: where small int32 tables and per-row scalars live (SMEM on TPU: loop
      bounds are scalars).
    compiler_params: `(num_warps, num_stages, num_grid_dims) -> compiler params`.
    stream_kv_blocks: flash attention streams the visited K/V blocks through the grid (scalar
      prefetch of the block table; Mosaic TPU) instead of holding a whole row in fast memory.
  """
  name: str
  block_sizes: BlockSizes
  min_block_q: int
  min_block_k: int
  pad_head_dim: Callable[[int], int]
  table_memory_space: Any
  compiler_params: Callable[[int, int, int], Any]
  stream_kv_blocks: bool = False

  def table_spec(self):
    """BlockSpec of a whole small table (block tables, lengths, per-row parameters)."""
    return pl.BlockSpec(memory_space=self.table_memory_space)


def _triton_params(num_warps, num_stages, num_grid_dims):
  del num_grid_dims
  return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _mosaic_tpu_params(num_warps, num_stages, num_grid_dims):
  del num_warps, num_stages
  # Every program writes its own output tile, so all grid axes may run in any order / on any core.
  return pltpu.CompilerParams(dimension_semantics=("parallel",) * num_grid_dims)


# GPU tiles follow the Triton fused-attention tutorial's Hopper settings; retune with
# `benchmarks/attention.py --sweep`.
_GPU = Platform(
    name="gpu", block_sizes=BlockSizes(num_warps_bwd=4), min_block_q=16, min_block_k=16,
    pad_head_dim=lambda d: max(16, pl.next_power_of_2(d)), table_memory_space=None,
    compiler_params=_triton_params)
_TPU = Platform(
    name="tpu",
    block_sizes=BlockSizes(block_q=128, block_k=128, block_q_dq=128, block_k_dq=128,
                           block_q_dkv=128, block_k_dkv=128),
    min_block_q=8, min_block_k=128, pad_head_dim=lambda d: round_up(d, 128),
    table_memory_space=pltpu.SMEM, compiler_params=_mosaic_tpu_params, stream_kv_blocks=True)
# CPU runs the GPU launch in interpret mode, so CI exercises the same grid and block specs.
_CPU = dataclasses.replace(_GPU, name="cpu")
PLATFORMS = {p.name: p for p in (_GPU, _TPU, _CPU)}


def resolve_platform(platform=None, interpret=None):
  """`(platform, interpret)` with defaults filled: the default backend; interpret only on CPU."""
  name = jax.default_backend() if platform is None else platform
  if name not in PLATFORMS:
    raise ValueError(f"platform={name!r} is not one of {sorted(PLATFORMS)}.")
  if interpret is None:
    interpret = name == "cpu"
  return PLATFORMS[name], bool(interpret)


# ----------------------------------------------------------------------------------------------
# Kernel-side matmuls and the online-softmax state.


def dot_nt(a_MD, b_ND):
  """a @ b.T with float32 accumulation: `[M, N]` (kernel-side; no transpose is materialised)."""
  return lax.dot_general(a_MD, b_ND, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def dot_nn(a_MN, b_ND):
  """a @ b with float32 accumulation: `[M, D]`."""
  return lax.dot_general(a_MN, b_ND, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def softmax_init(rows, head_dim):
  """Online-softmax state `(acc_MD, max_M1, sum_M1)` before any key (FlashAttention-2)."""
  return (jnp.zeros((rows, head_dim), jnp.float32), jnp.full((rows, 1), -jnp.inf, jnp.float32),
          jnp.zeros((rows, 1), jnp.float32))


def softmax_update(state, s_MN, v_ND, *, may_be_empty):
  """Folds one key block into the state. `s_MN`: base-2 logits, -inf where masked.

  `may_be_empty`: some row may have no unmasked key so far; keeps exp2 away from (-inf) - (-inf).
  """
  acc_MD, max_M1, sum_M1 = state
  new_max_M1 = jnp.maximum(max_M1, jnp.max(s_MN, axis=1, keepdims=True))
  if may_be_empty:
    new_max_M1 = jnp.where(new_max_M1 == -jnp.inf, 0.0, new_max_M1)
  p_MN = jnp.exp2(s_MN - new_max_M1)
  alpha_M1 = jnp.exp2(max_M1 - new_max_M1)
  sum_M1 = alpha_M1 * sum_M1 + jnp.sum(p_MN, axis=1, keepdims=True)
  acc_MD = alpha_M1 * acc_MD + dot_nn(p_MN.astype(v_ND.dtype), v_ND)
  return acc_MD, new_max_M1, sum_M1


def softmax_finish(state):
  """`(out_MD, lse_M1, seen_M1)`: normalised float32 output (0 on unseen rows), base-2 lse
  (meaningful where `seen`), and whether the row saw any key."""
  acc_MD, max_M1, sum_M1 = state
  seen_M1 = sum_M1 > 0
  safe_sum_M1 = jnp.where(seen_M1, sum_M1, 1.0)
  return acc_MD / safe_sum_M1, max_M1 + jnp.log2(safe_sum_M1), seen_M1
