"""Packing a buffer of examples into fixed-length rows at once: best-fit decreasing, vectorised.

SeqIO's packer (`seqio.utils._pack_with_tf_ops`) walks examples one at a time in a `tf.while_loop`
and concatenates them greedily in stream order (next-fit): a row closes as soon as one example
does not fit. Here a whole buffer of examples is packed by a few numpy passes:

1. `assign_rows`: every example gets a row. Examples are taken in decreasing size; rows open in
   bulk (as many as the buffer's remaining tokens surely need) seeded with the largest examples,
   then rounds of best-fit matching fill them: in one round each row takes at most one example,
   the largest examples first, each into the tightest open row it fits. A round is one sort and
   a few cumulative sums over all rows and examples (a stack discipline, solved by reflection:
   see `_best_fit_pairs`), so the Python loop runs over rounds (about the examples per row), never
   over examples. Layouts with two lengths (encoder inputs, decoder targets) fit both at once.
2. `_Rows.write`: tokens, segment ids and positions of every example land in their row in one
   flat index per feature. Inside a row, examples keep their stream order; rows come out ordered by
   their first example in the stream, so the packed stream follows the example stream.

Nothing here is random: the rows are a pure function of the buffer, so a deterministic example
stream gives a deterministic row stream (exact resume by skipping rows). An example longer than
its row raises (`ValueError`): nothing is truncated or dropped.
"""

from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf


def _best_fit_pairs(row_room_R: np.ndarray, item_size_M: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
  """One round of best-fit matching: rows `r` and items `m` with `size[m] <= room[r]`.

  Items are served largest first; each takes the open row of least room that fits it, and a row
  takes at most one item. Walking rows and items merged in decreasing value (rows first at ties),
  the open rows form a stack (the top has the least room >= the current value): a row pushes, an
  item pops if the stack is not empty. The stack depth is the cumulative sum of +1/-1 reflected
  at zero (pops on an empty stack are skipped), and the row an item pops is the last push to the
  same depth before it: sorting pushes and pops by (depth, time) puts each pop right after its row.
  """
  num_rows = len(row_room_R)
  values = np.concatenate([row_room_R, item_size_M]).astype(np.float64)
  is_row = np.arange(len(values)) < num_rows
  order = np.lexsort((~is_row, -values))   # decreasing value, rows before items at ties
  is_row_T = is_row[order]
  depth = np.cumsum(np.where(is_row_T, 1, -1))
  depth -= np.minimum(np.minimum.accumulate(depth), 0)   # reflected at zero
  before = np.concatenate([[0], depth[:-1]])
  pops = ~is_row_T & (before > 0)
  events = np.flatnonzero(is_row_T | pops)
  level = np.where(is_row_T[events], depth[events], before[events])
  by_level = events[np.lexsort((events, level))]
  is_pop = pops[by_level]   # never the first: each depth's first event is a push
  rows = order[by_level[np.flatnonzero(is_pop) - 1]]
  items = order[by_level[is_pop]] - num_rows
  return rows, items


def assign_rows(lengths_ND: np.ndarray, capacity_D: Sequence[int]) -> tuple[np.ndarray, int]:
  """The row of each of N examples (`[N]`, rows numbered from 0) and the number of rows.

  `lengths_ND`: each example's length in each of the D packed dimensions (one for decoder rows;
  encoder inputs and decoder targets for encoder-decoder); `capacity_D`: the row length of each.
  Every row's lengths sum to at most its capacity in every dimension.
  """
  lengths_ND = np.asarray(lengths_ND, np.int64).reshape(len(lengths_ND), -1)
  capacity_D = np.asarray(capacity_D, np.int64)
  over = np.flatnonzero((lengths_ND > capacity_D).any(axis=1))
  if over.size:
    raise ValueError(f"An example of lengths {lengths_ND[over[0]].tolist()} does not fit a row "
                     f"of lengths {capacity_D.tolist()}: packing never truncates. Give the task "
                     "longer feature lengths, or split or trim its examples before packing.")
  num_items, dims = lengths_ND.shape
  share_ND = lengths_ND / capacity_D
  # Decreasing size (the largest share of a row over dimensions); ties keep stream order.
  unplaced = np.argsort(-share_ND.max(axis=1), kind="stable")
  row_N = np.full(num_items, -1, np.int64)
  room_RD = np.zeros((0, dims), np.int64)
  while unplaced.size:
    rows, picks = _round(room_RD, lengths_ND[unplaced], capacity_D)
    if rows.size:
      row_N[unplaced[picks]] = rows
      np.subtract.at(room_RD, rows, lengths_ND[unplaced[picks]])
      unplaced = np.delete(unplaced, picks)
      continue
    # Nothing left fits an open row: open as many rows as the rest surely needs (its tokens,
    # and one row each for examples over half a row), seeded with the largest examples.
    rest_ND = lengths_ND[unplaced]
    need = max(-(-rest_ND.sum(axis=0) // capacity_D).max(),
               (2 * rest_ND > capacity_D).sum(axis=0).max(), 1)
    seeds = unplaced[:need]
    row_N[seeds] = len(room_RD) + np.arange(len(seeds))
    room_RD = np.concatenate([room_RD, capacity_D - lengths_ND[seeds]])
    unplaced = unplaced[need:]
  return row_N, len(room_RD)


def _round(room_RD: np.ndarray, lengths_MD: np.ndarray, capacity_D: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
  """One matching round: (rows, indices into `lengths_MD`) of items placed, at most one per row.

  First on one size per item and one room per row that make any match fit in every dimension
  (the item's largest share of a row against the row's least share left); if that places
  nothing, on each single dimension, keeping the pairs that fit in all (an example long in
  inputs beside one long in targets).
  """
  open_rows = np.flatnonzero((room_RD >= lengths_MD.min(axis=0)).all(axis=1))
  if not open_rows.size:
    return open_rows, open_rows
  room_OD = room_RD[open_rows]
  rows, items = _best_fit_pairs((room_OD / capacity_D).min(axis=1),
                                (lengths_MD / capacity_D).max(axis=1))
  if rows.size or room_RD.shape[1] == 1:
    return open_rows[rows], items
  for d in range(room_RD.shape[1]):
    rows, items = _best_fit_pairs(room_OD[:, d], lengths_MD[:, d])
    fits = (lengths_MD[items] <= room_OD[rows]).all(axis=1)
    if fits.any():
      return open_rows[rows[fits]], items[fits]
  return rows[:0], items[:0]


def row_layout(row_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Final row numbers (rows ordered by their first example) and segment ids (1, 2, ... in
  stream order inside each row) of N examples assigned to rows `row_N`."""
  num_rows = int(row_N.max()) + 1 if row_N.size else 0
  first_R = np.full(num_rows, len(row_N), np.int64)
  np.minimum.at(first_R, row_N, np.arange(len(row_N)))
  rank_R = np.empty(num_rows, np.int64)
  rank_R[np.argsort(first_R, kind="stable")] = np.arange(num_rows)
  row_N = rank_R[row_N]
  order = np.lexsort((np.arange(len(row_N)), row_N))  # by row, stream order inside
  starts = np.flatnonzero(np.diff(row_N[order], prepend=-1))
  segment_N = np.empty(len(row_N), np.int64)
  segment_N[order] = np.arange(len(row_N)) - np.repeat(starts, np.diff(starts, append=len(row_N)))
  return row_N, segment_N + 1


def _starts(row_N: np.ndarray, segment_N: np.ndarray, lengths_N: np.ndarray) -> np.ndarray:
  """Where each example starts in its row: the summed lengths of the row's earlier segments."""
  order = np.lexsort((segment_N, row_N))
  ends = np.cumsum(lengths_N[order])
  starts = ends - lengths_N[order]
  first = np.flatnonzero(segment_N[order] == 1)
  row_base = np.repeat(starts[first], np.diff(first, append=len(order)))
  out = np.empty(len(row_N), np.int64)
  out[order] = starts - row_base
  return out


class _Rows:
  """Packed rows `[R, L]` being written: tokens, segment ids and positions (flat, `[R * L]`)."""

  def __init__(self, row_N: np.ndarray, segment_N: np.ndarray, lengths_N: np.ndarray,
               num_rows: int, length: int):
    self.length, self.segment_N = length, segment_N
    self.base_N = row_N * length + _starts(row_N, segment_N, lengths_N)  # flat start of each
    self.tokens = np.zeros(num_rows * length, np.int32)
    self.segments = np.zeros(num_rows * length, np.int32)
    self.positions = np.zeros(num_rows * length, np.int32)

  def write(self, part: tuple[np.ndarray, np.ndarray], skip_N: np.ndarray | int = 0
            ) -> np.ndarray:
    """Writes one part of every example (tokens `values` split by `splits`, `[N + 1]`) from
    `skip_N` tokens into it; returns each token's flat destination `[T]`."""
    values, splits = part
    lengths_N = np.diff(splits)
    dest_T = np.arange(len(values)) + np.repeat(self.base_N + skip_N - splits[:-1], lengths_N)
    self.tokens[dest_T] = values
    self.segments[dest_T] = np.repeat(self.segment_N, lengths_N)
    self.positions[dest_T] = dest_T - np.repeat(self.base_N, lengths_N)
    return dest_T

  def features(self, prefix: str, bos_id: int | None) -> dict[str, np.ndarray]:
    """`<prefix>_{input,target}_tokens` (decoder) or `<prefix>_input_tokens` (encoder, no
    `bos_id`), `_segment_ids`, `_positions`, each `[R, L]`."""
    shape = (-1, self.length)
    tokens, segments = self.tokens.reshape(shape), self.segments.reshape(shape)
    out = {f"{prefix}_segment_ids": segments,
           f"{prefix}_positions": self.positions.reshape(shape)}
    if bos_id is None:
      out[f"{prefix}_input_tokens"] = tokens
    else:
      out[f"{prefix}_target_tokens"] = tokens
      out[f"{prefix}_input_tokens"] = _shift_right(tokens, segments, bos_id)
    return out


def _shift_right(tokens_RL: np.ndarray, segments_RL: np.ndarray, bos_id: int) -> np.ndarray:
  """Decoder inputs: targets shifted right by one, `bos_id` where a segment (or padding) starts
  (SeqIO's `make_autoregressive_inputs` with `sequence_id`)."""
  shifted = np.pad(tokens_RL[:, :-1], ((0, 0), (1, 0)))
  prev_segments = np.pad(segments_RL[:, :-1], ((0, 0), (1, 0)))
  return np.where(segments_RL == prev_segments, shifted, bos_id).astype(np.int32)


def _lengths(*parts) -> np.ndarray:
  """`[N, P]`: each example's length in each part (values, row splits)."""
  return np.stack([np.diff(splits) for _, splits in parts], axis=1)


def _layout(lengths_ND: np.ndarray, capacity_D: Sequence[int]):
  row_N, num_rows = assign_rows(lengths_ND, capacity_D)
  return (*row_layout(row_N), num_rows)


def pack_lm(targets, length: int, bos_id: int = 0) -> dict[str, np.ndarray]:
  """Decoder-only LM rows (SeqIO `LMFeatureConverter(pack=True)` features) of examples
  `targets = (values, row_splits)`."""
  lengths_N1 = _lengths(targets)
  row_N, segment_N, num_rows = _layout(lengths_N1, [length])
  rows = _Rows(row_N, segment_N, lengths_N1[:, 0], num_rows, length)
  rows.write(targets)
  out = rows.features("decoder", bos_id)
  out["decoder_loss_weights"] = (out["decoder_target_tokens"] != 0).astype(np.int32)
  return out


def pack_prefix_lm(inputs, targets, length: int, bos_id: int = 0,
                   loss_on_targets_only: bool = True) -> dict[str, np.ndarray]:
  """Prefix-LM rows (SeqIO `PrefixLMFeatureConverter(pack=True)` features): each example is
  inputs ++ targets in one segment, bidirectional over the inputs and one position more
  (`decoder_causal_attention`), scored on the targets (all of it without
  `loss_on_targets_only`)."""
  lengths_N2 = _lengths(inputs, targets)
  row_N, segment_N, num_rows = _layout(lengths_N2.sum(axis=1, keepdims=True), [length])
  rows = _Rows(row_N, segment_N, lengths_N2.sum(axis=1), num_rows, length)
  inputs_T = rows.write(inputs)
  targets_T = rows.write(targets, skip_N=lengths_N2[:, 0])
  bidirectional = np.zeros(num_rows * length, np.int32)
  bidirectional[inputs_T] = 1
  # SeqIO's "one position more": where the first target token is predicted from the inputs.
  bidirectional[targets_T[rows.positions[targets_T] == np.repeat(lengths_N2[:, 0],
                                                                   lengths_N2[:, 1])]] = 1
  out = rows.features("decoder", bos_id)
  nonpad = out["decoder_target_tokens"] != 0
  if loss_on_targets_only:
    nonpad[np.unravel_index(inputs_T, nonpad.shape)] = False
  out["decoder_loss_weights"] = nonpad.astype(np.int32)
  out["decoder_causal_attention"] = bidirectional.reshape(-1, length)
  return out


def pack_enc_dec(inputs, targets, inputs_length: int, targets_length: int, bos_id: int = 0
                 ) -> dict[str, np.ndarray]:
  """Encoder-decoder rows (SeqIO `EncDecFeatureConverter(pack=True)` features): inputs and
  targets of one example share a row and a segment id."""
  lengths_N2 = _lengths(inputs, targets)
  row_N, segment_N, num_rows = _layout(lengths_N2, [inputs_length, targets_length])
  encoder = _Rows(row_N, segment_N, lengths_N2[:, 0], num_rows, inputs_length)
  decoder = _Rows(row_N, segment_N, lengths_N2[:, 1], num_rows, targets_length)
  encoder.write(inputs)
  decoder.write(targets)
  out = {**encoder.features("encoder", None), **decoder.features("decoder", bos_id)}
  out["decoder_loss_weights"] = (out["decoder_target_tokens"] != 0).astype(np.int32)
  return out


def packed_dataset(dataset: tf.data.Dataset, features: Sequence[str],
                   pack_fn: Callable[..., Mapping[str, np.ndarray]],
                   output_lengths: Mapping[str, int],
                   buffer_size: int | None = None) -> tf.data.Dataset:
  """Packed rows of `dataset`'s 1-D int32 `features`: each buffer of `buffer_size` consecutive
  examples (the last one may be shorter) becomes rows by `pack_fn((values, row_splits) of each
  feature)`, which returns the `output_lengths` features `[R, length]`.

  Default buffer: the longest row length in examples, as SeqIO's packer batches (enough for one
  full row of 1-token examples), so the first rows wait for no more input than SeqIO's do.
  """
  buffer_size = buffer_size or max(output_lengths.values())
  if buffer_size < 1:
    raise ValueError(f"buffer_size={buffer_size}: pack at least one example at a time.")
  names = list(output_lengths)

  def pack(*flat):
    pairs = [(flat[i], flat[i + 1].astype(np.int64)) for i in range(0, len(flat), 2)]
    rows = pack_fn(*pairs)
    return [rows[name] for name in names]

  def packed(batch):
    flat = []
    for name in features:
      flat += [batch[name].values, batch[name].row_splits]
    rows = tf.numpy_function(pack, flat, [tf.int32] * len(names), stateful=False)
    return {name: tf.ensure_shape(t, [None, output_lengths[name]]) for name, t in zip(names, rows)}

  dataset = dataset.map(lambda ex: {k: tf.cast(ex[k], tf.int32) for k in features},
                        num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.ragged_batch(buffer_size)
  return dataset.map(packed, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
