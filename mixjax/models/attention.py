"""The one attention dispatch point: `xla` (reference) | `pallas` (kernels) | `cudnn`.

Every caller describes its mask as per-row key ranges `[k_start, k_end)` (see `masks.py`), so
backends never receive a T×T array. An implementation that cannot run a case falls back to the
reference with a logged reason instead of failing or silently changing numbers.

On a mesh. XLA cannot partition a Pallas kernel (Mosaic TPU refuses; on GPU XLA would gather
its inputs), so the kernels run inside `shard_map` over the mesh that `kernel_mesh(mesh)` names
(the trainer enters it with its mesh): the batch split over the mesh axes the logical rules give
`batch`, heads over those of `act_heads`. Keys and values are split the same way and never
gathered; a GQA group (q heads sharing a kv head) stays on one shard because q and kv heads are
split into the same number of contiguous blocks. The sequence axis stays whole per shard.
`shard_over_batch_and_heads` is the wrapper, for training and decode kernels alike.
"""

import contextlib
import contextvars
import functools
from typing import Callable, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from mixjax.kernels import decode_attention as decode_lib
from mixjax.kernels import flash_attention as flash_lib

AttentionFn = Callable[..., jax.Array]

_KERNEL_MESH = contextvars.ContextVar("mixjax_kernel_mesh", default=None)


@contextlib.contextmanager
def kernel_mesh(mesh: jax.sharding.Mesh | None):
  """Kernels traced inside run under `shard_map` over `mesh` (None: called as they are)."""
  token = _KERNEL_MESH.set(mesh)
  try:
    yield
  finally:
    _KERNEL_MESH.reset(token)


def current_kernel_mesh() -> jax.sharding.Mesh | None:
  return _KERNEL_MESH.get()


def _axes_tuple(axes) -> tuple[str, ...]:
  if axes is None:
    return ()
  return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def _split_size(mesh, axes) -> int:
  return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def _usable_axes(mesh, logical: str, sizes: Sequence[int]):
  """Mesh axes the rules give `logical`, if they divide every size in `sizes`; else None."""
  axes = _axes_tuple(nn.logical_to_mesh_axes((logical,))[0])
  axes = tuple(a for a in axes if a in mesh.shape)
  split = _split_size(mesh, axes)
  if split == 1:
    return None
  if any(size % split for size in sizes):
    logging.log_first_n(
        logging.WARNING, "Kernel inputs with %s sizes %s do not split %d ways over mesh axes %s; "
        "that axis is replicated for the kernel.", 4, logical, tuple(sizes), split, axes)
    return None
  return axes


def shard_over_batch_and_heads(kernel: Callable, arrays: Sequence[jax.Array],
                               head_dims: Sequence[int | None]):
  """`kernel(*arrays)` run per shard of the current `kernel_mesh` (or once, without one).

  Every array has the batch on axis 0. `head_dims[i]` is the heads axis of `arrays[i]` (None:
  a per-row argument, split over the batch only). The output is laid out like `arrays[0]`.
  Heads are split only when every heads axis divides by the split (GQA: q and kv heads
  alike), the batch only when it divides; otherwise that axis is replicated for the kernel.
  """
  mesh = current_kernel_mesh()
  if mesh is None or mesh.size == 1:
    return kernel(*arrays)
  batch_axes = _usable_axes(mesh, "batch", [arrays[0].shape[0]])
  head_axes = _usable_axes(mesh, "act_heads",
                           [x.shape[d] for x, d in zip(arrays, head_dims) if d is not None])

  def spec(x, head_dim):
    entries = [None] * x.ndim
    entries[0] = batch_axes
    if head_dim is not None:
      entries[head_dim] = head_axes
    return P(*entries)

  in_specs = tuple(spec(x, d) for x, d in zip(arrays, head_dims))
  return jax.shard_map(kernel, mesh=mesh, in_specs=in_specs, out_specs=in_specs[0],
                       check_vma=False)(*arrays)


def _kernel_platform():
  """The platform of the mesh the kernel is compiled for (a dry run targets TPU from a CPU
  host), else the default backend's."""
  mesh = current_kernel_mesh()
  return None if mesh is None else mesh.devices.flat[0].platform


def _pallas(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT, *, scale=None):
  kernel = functools.partial(flash_lib.flash_attention, scale=scale, platform=_kernel_platform())
  return shard_over_batch_and_heads(kernel, (q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT),
                                    head_dims=(2, 2, 2, None, None))


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
  if impl == "pallas":  # for the mesh's platform (a dry run compiles for TPU from a CPU host)
    return functools.partial(decode_lib.decode_attention, platform=_kernel_platform())
  return xla_decode_attention


def decode_attention(q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B, *, impl="auto", scale=None,
                     mesh=None):
  """One decode step: q `[B,H,D]` over cache slots `[0, lengths_B)` of k/v `[B,S,K,D]`.

  On a `mesh` of more than one device the kernel runs inside `shard_map`, as the training
  kernels do (`shard_over_batch_and_heads`): each device attends its own rows and heads.
  Returns `[B,H,D]` in q's dtype.
  """
  with kernel_mesh(mesh):
    fn = functools.partial(_decode_impl(impl), scale=scale)
    return shard_over_batch_and_heads(fn, (q_BHD, k_cache_BSKD, v_cache_BSKD, lengths_B),
                                      head_dims=(1, 2, 2, None))
