"""Per-row key ranges `[k_start, k_end)` for every mask mixjax produces (DESIGN.md).

All functions take int32 `[batch, length]` arrays and return `(k_start_BT, k_end_BT)`.
Segment id 0 marks padding: its rows get an empty range.
"""

import jax
import jax.numpy as jnp


def _segment_starts(segment_ids_BT):
  """Index of the first position of each row's segment (segments are contiguous when packed)."""
  length = segment_ids_BT.shape[1]
  pos_BT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids_BT.shape)
  is_start_BT = jnp.concatenate(
      [jnp.ones_like(segment_ids_BT[:, :1], bool), segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]],
      axis=1)
  return jax.lax.cummax(jnp.where(is_start_BT, pos_BT, 0), axis=1)


def _segment_ends(segment_ids_BT):
  """One past the last position of each row's segment."""
  length = segment_ids_BT.shape[1]
  flipped = segment_ids_BT[:, ::-1]
  starts_rev = _segment_starts(flipped)
  return (length - starts_rev)[:, ::-1]


def causal_ranges(segment_ids_BT):
  """Causal attention within packed segments."""
  pos_BT = jnp.broadcast_to(jnp.arange(segment_ids_BT.shape[1], dtype=jnp.int32),
                            segment_ids_BT.shape)
  k_start_BT = _segment_starts(segment_ids_BT)
  k_end_BT = jnp.where(segment_ids_BT > 0, pos_BT + 1, k_start_BT)
  return k_start_BT, k_end_BT


def prefix_lm_ranges(segment_ids_BT, inputs_mask_BT):
  """Bidirectional over each segment's prefix (where `inputs_mask_BT` is true), causal after.

  Prefix rows see the whole prefix of their segment; later rows see everything up to themselves.
  """
  pos_BT = jnp.broadcast_to(jnp.arange(segment_ids_BT.shape[1], dtype=jnp.int32),
                            segment_ids_BT.shape)
  k_start_BT = _segment_starts(segment_ids_BT)
  # Prefix end of a segment = start + number of prefix tokens in the segment.
  seg_end_BT = _segment_ends(segment_ids_BT)
  prefix_cum_BT = jnp.cumsum(inputs_mask_BT.astype(jnp.int32), axis=1)
  before_start_BT = jnp.take_along_axis(
      jnp.pad(prefix_cum_BT, ((0, 0), (1, 0))), k_start_BT, axis=1)
  at_end_BT = jnp.take_along_axis(prefix_cum_BT, seg_end_BT - 1, axis=1)
  prefix_end_BT = k_start_BT + (at_end_BT - before_start_BT)
  k_end_BT = jnp.maximum(pos_BT + 1, jnp.where(inputs_mask_BT.astype(bool), prefix_end_BT, 0))
  k_end_BT = jnp.where(segment_ids_BT > 0, k_end_BT, k_start_BT)
  return k_start_BT, k_end_BT


def bidirectional_ranges(segment_ids_BT):
  """Full attention within each segment (encoder self-attention)."""
  k_start_BT = _segment_starts(segment_ids_BT)
  k_end_BT = jnp.where(segment_ids_BT > 0, _segment_ends(segment_ids_BT), k_start_BT)
  return k_start_BT, k_end_BT


def cross_ranges(decoder_segment_ids_BT, encoder_segment_ids_BS):
  """Encoder-decoder attention: each decoder row sees the encoder positions of its own segment.

  Packed encoder segments are contiguous and ascending (padding, id 0, at the end).
  """
  pad_id = jnp.iinfo(jnp.int32).max
  enc_sorted_BS = jnp.where(encoder_segment_ids_BS > 0, encoder_segment_ids_BS, pad_id)
  search = jax.vmap(jnp.searchsorted, in_axes=(0, 0, None))
  k_start_BT = search(enc_sorted_BS, decoder_segment_ids_BT, "left").astype(jnp.int32)
  k_end_BT = search(enc_sorted_BS, decoder_segment_ids_BT, "right").astype(jnp.int32)
  k_end_BT = jnp.where(decoder_segment_ids_BT > 0, k_end_BT, k_start_BT)
  return k_start_BT, k_end_BT
