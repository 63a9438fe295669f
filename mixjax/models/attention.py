"""The one attention dispatch point: `xla` (reference) | `pallas` (kernels) | `cudnn`.

Every caller describes its mask as per-row key ranges `[k_start, k_end)` (see `masks.py`), so
backends never receive a T×T array. An implementation that cannot run a case falls back to the
reference with a logged reason instead of failing or silently changing numbers.
"""

import functools
from typing import Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from mixjax.kernels import decode_attention as decode_lib
from mixjax.kernels import flash_attention as flash_lib

AttentionFn = Callable[..., jax.Array]


def _pallas(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, *, scale=None):
  kernel = getattr(flash_lib, "flash_attention", None)
  if kernel is None:
    logging.warning("attention_impl='pallas' requested but no flash_attention kernel is built; "
                    "using the XLA reference.")
    return flash_lib.reference_flash_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT,
                                               scale=scale)
  return kernel(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, scale=scale)


def _cudnn(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, *, scale=None):
  if jax.default_backend() != "gpu":
    logging.log_first_n(logging.WARNING,
                        "attention_impl='cudnn' needs a GPU (backend is %s); using the XLA "
                        "reference.", 1, jax.default_backend())
    return flash_lib.reference_flash_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT,
                                               scale=scale)
  key_pos_S = jnp.arange(k_BSKD.shape[1], dtype=jnp.int32)
  key_pos_11S = key_pos_S[None, None, :]
  mask_B1TS = ((key_pos_11S >= k_start_BT[..., None]) & (key_pos_11S < k_end_BT[..., None]))[:, None]
  out = jax.nn.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, mask=mask_B1TS, scale=scale,
                                     implementation="cudnn")
  # cuDNN leaves empty rows undefined; the contract is zeros.
  empty_BT11 = (k_end_BT <= k_start_BT)[..., None, None]
  return jnp.where(empty_BT11, jnp.zeros_like(out), out)


ATTENTION_IMPLS: dict[str, AttentionFn] = {
    "xla": flash_lib.reference_flash_attention,
    "pallas": _pallas,
    "cudnn": _cudnn,
}


def dot_product_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, *, impl="xla",
                          scale=None):
  """Attention of q `[B,T,H,D]` over k/v `[B,S,K,D]` restricted per row to `[k_start, k_end)`."""
  try:
    fn = ATTENTION_IMPLS[impl]
  except KeyError:
    raise ValueError(f"Unknown attention_impl {impl!r}; valid: {sorted(ATTENTION_IMPLS)}.") from None
  return fn(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, scale=scale)


# ----------------------------------------------------------------------------------------------
# Decoding: one query per row against a KV cache.

DECODE_IMPLS = ("auto", "xla", "pallas")


def xla_decode_attention(q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B, *, scale=None):
  """`decode_lib.reference_decode_attention`'s numbers as broadcast multiplies and reductions
  over the cache's own layout: the reference's batched einsum transposes the whole cache and runs
  B·K tiny matmuls each step, about 5x slower on CPU at batch 64 (`tests/test_inference.py`
  checks the two agree)."""
  batch, num_heads, head_dim = q_BHD.shape
  num_kv_heads = k_cache_BSKD.shape[2]
  scale = head_dim**-0.5 if scale is None else scale
  q_B1KGD = q_BHD.reshape(batch, 1, num_kv_heads, num_heads // num_kv_heads, head_dim)
  s_BSKG = jnp.sum(q_B1KGD.astype(jnp.float32) * k_cache_BSKD[:, :, :, None, :], axis=-1) * scale
  live_BS11 = (jnp.arange(k_cache_BSKD.shape[1])[None, :] < lengths_B[:, None])[:, :, None, None]
  s_BSKG = jnp.where(live_BS11, s_BSKG, -jnp.inf)
  max_B1KG = jnp.max(s_BSKG, axis=1, keepdims=True)
  max_B1KG = jnp.where(jnp.isfinite(max_B1KG), max_B1KG, 0.0)
  p_BSKG = jnp.where(live_BS11, jnp.exp(s_BSKG - max_B1KG), 0.0)
  # Dead slots may hold anything (stale or uninitialised); 0 * NaN would leak through.
  v_BSK1D = jnp.where(live_BS11[..., None], v_cache_BSKD[:, :, :, None, :], 0.0)
  out_BKGD = jnp.sum(p_BSKG[..., None] * v_BSK1D, axis=1)
  denom_BKG1 = jnp.sum(p_BSKG, axis=1)[..., None]
  out_BKGD = out_BKGD / jnp.where(denom_BKG1 > 0, denom_BKG1, 1.0)
  return out_BKGD.reshape(batch, num_heads, head_dim).astype(q_BHD.dtype)


def _decode_impl(impl: str):
  """The decode-attention function for `impl`: `auto` is the Pallas kernel on GPU/TPU and XLA on
  CPU (where the kernel would run in the Pallas interpreter, far slower)."""
  if impl not in DECODE_IMPLS:
    raise ValueError(f"Unknown decode attention impl {impl!r}; valid: {DECODE_IMPLS}.")
  if impl == "auto":
    impl = "xla" if jax.default_backend() == "cpu" else "pallas"
  return decode_lib.decode_attention if impl == "pallas" else xla_decode_attention


def decode_attention(q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B, *, impl="auto", scale=None,
                     mesh=None):
  """One decode step: q `[B,H,D]` over cache slots `[0, lengths_B)` of k/v `[B,S,K,D]`.

  On a `mesh` of more than one device the kernel runs inside `shard_map` (Mosaic kernels cannot
  be partitioned automatically): rows split as the logical `batch` axis and heads as
  `act_heads` / `kv_heads` under the current `nn.logical_axis_rules`, each device attending its
  own rows and heads. Returns `[B,H,D]` in q's dtype.
  """
  fn = functools.partial(_decode_impl(impl), scale=scale)
  if mesh is None or mesh.size == 1:
    return fn(q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B)
  spec = lambda *names: nn.logical_to_mesh_axes(names)  # noqa: E731
  q_spec, kv_spec = spec("batch", "act_heads", None), spec("batch", None, "kv_heads", None)
  return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, spec("batch")),
                       out_specs=q_spec, check_vma=False)(
                           q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B)
