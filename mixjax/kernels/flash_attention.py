"""Attention over per-row key ranges: the reference (pure JAX) implementation.

Masks are described per query row as a key range `[k_start, k_end)` (DESIGN.md): causal, packed
documents and prefix-LM all reduce to one contiguous range per row, so no T×T mask is ever an input.
A row whose range is empty attends to nothing and outputs zeros.

Shapes: q_BTHD `[batch, q_len, q_heads, head_dim]`, k_BSKD / v_BSKD `[batch, kv_len, kv_heads, head_dim]`
with kv_heads dividing q_heads (grouped-query attention), k_start_BT / k_end_BT int32 `[batch, q_len]`.
"""

import jax
import jax.numpy as jnp


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
  key_pos_11S = key_pos_S[None, None, :]
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
