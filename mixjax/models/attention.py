"""The one attention dispatch point: `xla` (reference) | `pallas` (kernels) | `cudnn`.

Every caller describes its mask as per-row key ranges `[k_start, k_end)` (see `masks.py`), so
backends never receive a T×T array. An implementation that cannot run a case falls back to the
reference with a logged reason instead of failing or silently changing numbers.
"""

from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp

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
