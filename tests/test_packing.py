"""mixjax's packer (`mixjax.data.packing`, `features.Packed*`) against SeqIO's converters.

Property tests on random example streams: the same multiset of segments (each segment's tokens
and per-token features) as SeqIO's packed converter gives, rows never over length, every token
kept; plus the fill rate against SeqIO's on UL2-like lengths, determinism across buffers, and the
errors for examples that do not fit. Each layout's property test runs a seeded long stream and
`MIXJAX_PACKING_EXAMPLES` (default 2) drawn ones; set it to 50 for a thorough run.
"""

import collections
import os

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import seqio
import tensorflow as tf

from mixjax.data import features
from mixjax.data import packing

# Each drawn stream runs through two TF pipelines (about a second): few, long streams, packed in
# small buffers so that every stream crosses several.
SETTINGS = hypothesis.settings(derandomize=True, deadline=None, database=None,
                               max_examples=int(os.environ.get("MIXJAX_PACKING_EXAMPLES", 2)),
                               suppress_health_check=list(hypothesis.HealthCheck))
FAST = hypothesis.settings(derandomize=True, deadline=None, database=None, max_examples=60)
TOKEN = st.integers(2, 300)  # never 0 (padding); 1 is EOS, fine anywhere
STREAM = 150                 # most examples in a drawn stream
BUFFER = 32                  # examples packed together in the property tests


def _dataset(examples):
  return tf.data.Dataset.from_tensor_slices(
      {k: tf.ragged.constant([list(e[k]) for e in examples], tf.int32) for k in examples[0]})


def _rows(converter, examples, lengths):
  out = list(converter(_dataset(examples), lengths).as_numpy_iterator())
  return {k: np.stack([row[k] for row in out]) for k in out[0]}


SEGMENT_FEATURES = {  # side -> (segment ids, per-token features)
    "decoder": ("decoder_segment_ids", ("decoder_target_tokens", "decoder_input_tokens",
                                        "decoder_loss_weights", "decoder_positions",
                                        "decoder_causal_attention")),
    "encoder": ("encoder_segment_ids", ("encoder_input_tokens", "encoder_positions")),
}


def _segments(rows) -> collections.Counter:
  """Multiset of segments: per row and segment id, each side's per-token feature values."""
  found = collections.Counter()
  sides = [s for s, (ids, _) in SEGMENT_FEATURES.items() if ids in rows]
  for r in range(len(rows["decoder_segment_ids"])):
    ids = set()
    for side in sides:
      ids |= set(rows[SEGMENT_FEATURES[side][0]][r][rows[SEGMENT_FEATURES[side][0]][r] > 0])
    for s in sorted(ids):
      key = []
      for side in sides:
        seg, names = SEGMENT_FEATURES[side]
        at = rows[seg][r] == s
        key.append(tuple(tuple(rows[n][r][at].tolist()) for n in names if n in rows))
      found[tuple(key)] += 1
  return found


def _check_against_seqio(ours_cls, seqio_cls, examples, lengths, **kwargs):
  theirs = _rows(seqio_cls(pack=True, **kwargs), examples, lengths)
  ours = _rows(ours_cls(pack=True, buffer_size=BUFFER, **kwargs), examples, lengths)
  assert set(ours) == set(theirs)
  for name, value in theirs.items():
    assert ours[name].dtype == value.dtype, name
    assert ours[name].shape[1] == value.shape[1], name  # never over length: fixed row shape
  assert _segments(ours) == _segments(theirs)
  return ours, theirs


def _token_lists(max_len):
  return st.lists(TOKEN, min_size=1, max_size=max_len)


def _seeded_stream(*max_lens, seed=0):
  """A long stream drawn by numpy: each example one token list per `max_lens` entry."""
  rng = np.random.default_rng(seed)
  lists = [[rng.integers(2, 300, rng.integers(1, n + 1)).tolist() for n in max_lens]
           for _ in range(STREAM)]
  return [x[0] for x in lists] if len(max_lens) == 1 else [tuple(x) for x in lists]


@SETTINGS
@hypothesis.given(st.lists(_token_lists(24), min_size=1, max_size=STREAM))
@hypothesis.example(_seeded_stream(24))
def test_lm_matches_seqio_segments(targets):
  _check_against_seqio(features.PackedLMConverter, seqio.DecoderFeatureConverter,
                       [{"targets": t} for t in targets], {"targets": 24})


@SETTINGS
@hypothesis.given(st.lists(st.tuples(_token_lists(14), _token_lists(10)), min_size=1,
                           max_size=STREAM), st.booleans())
@hypothesis.example(_seeded_stream(14, 10), True)
def test_prefix_lm_matches_seqio_segments(pairs, loss_on_targets_only):
  examples = [{"inputs": i, "targets": t} for i, t in pairs]
  ours, _ = _check_against_seqio(features.PackedPrefixLMConverter, seqio.PrefixLMFeatureConverter,
                                 examples, {"inputs": 14, "targets": 10},
                                 loss_on_targets_only=loss_on_targets_only)
  assert ours["decoder_target_tokens"].shape[1] == 24


@SETTINGS
@hypothesis.given(st.lists(st.tuples(_token_lists(20), _token_lists(12)), min_size=1,
                           max_size=STREAM))
@hypothesis.example(_seeded_stream(20, 12))
def test_enc_dec_matches_seqio_segments(pairs):
  examples = [{"inputs": i, "targets": t} for i, t in pairs]
  ours, _ = _check_against_seqio(features.PackedEncDecConverter, seqio.EncDecFeatureConverter,
                                 examples, {"inputs": 20, "targets": 12})
  # An example's inputs and targets share a row and a segment id.
  enc_ids, dec_ids = ours["encoder_segment_ids"], ours["decoder_segment_ids"]
  for r in range(len(enc_ids)):
    assert set(enc_ids[r][enc_ids[r] > 0]) == set(dec_ids[r][dec_ids[r] > 0])


def test_seqio_docstring_examples_come_out_identical():
  """One row each: the packed rows of SeqIO's own docstring examples, feature for feature."""
  examples = [{"inputs": [7, 8, 5, 1], "targets": [3, 9, 1]},
              {"inputs": [8, 4, 9, 3, 1], "targets": [4, 1]}]
  cases = [(features.PackedEncDecConverter, seqio.EncDecFeatureConverter, examples,
            {"inputs": 10, "targets": 7}),
           (features.PackedPrefixLMConverter, seqio.PrefixLMFeatureConverter, examples,
            {"inputs": 7, "targets": 8}),
           (features.PackedLMConverter, seqio.DecoderFeatureConverter,
            [{"targets": e["targets"]} for e in examples], {"targets": 6})]
  for ours_cls, seqio_cls, exs, lengths in cases:
    theirs, ours = _rows(seqio_cls(), exs, lengths), _rows(ours_cls(), exs, lengths)
    assert set(ours) == set(theirs)
    for name in theirs:
      np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@FAST
@hypothesis.given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 17)), min_size=1,
                           max_size=200), st.integers(1, 3))
def test_assign_rows_places_every_example_within_capacity(lengths, dims):
  lengths_ND = np.asarray(lengths)[:, :dims] if dims <= 2 else np.asarray(lengths)[:, [0, 1, 0]]
  capacity_D = np.array([40, 17, 40])[:lengths_ND.shape[1]]
  row_N, num_rows = packing.assign_rows(lengths_ND, capacity_D)
  assert row_N.min() >= 0 and set(row_N) == set(range(num_rows))
  for d in range(lengths_ND.shape[1]):
    assert np.bincount(row_N, weights=lengths_ND[:, d], minlength=num_rows).max() <= capacity_D[d]


@FAST
@hypothesis.given(st.lists(st.integers(0, 12), max_size=12), st.lists(st.integers(0, 12),
                                                                      max_size=12))
def test_best_fit_pairs_is_the_sequential_greedy(rooms, sizes):
  """Largest item first, each into the open row of least room that fits it (a plain loop)."""
  rows, items = packing._best_fit_pairs(np.asarray(rooms, float), np.asarray(sizes, float))
  free, expected = list(range(len(rooms))), {}
  for m in sorted(range(len(sizes)), key=lambda m: (-sizes[m], m)):
    fitting = [r for r in free if rooms[r] >= sizes[m]]
    if fitting:
      r = min(fitting, key=lambda r: (rooms[r], -r))
      free.remove(r)
      expected[m] = rooms[r]
  # Same items placed, each in a row of the same room (rows of equal room are interchangeable).
  assert sorted(items.tolist()) == sorted(expected)
  assert len(set(rows.tolist())) == len(rows)
  assert {int(m): rooms[r] for r, m in zip(rows, items)} == expected


def _ul2_like(num, seed):
  """Encoder/decoder lengths as the UL2 mixture gives short documents (R: long inputs, short
  targets; X: both about half; S: a uniform split), at most 512 each."""
  rng = np.random.default_rng(seed)
  doc = rng.integers(40, 700, num)
  kind = rng.choice(3, num, p=[0.4, 0.4, 0.2])
  noise = np.where(kind == 0, 0.15, np.where(kind == 1, 0.5, rng.uniform(0, 1, num)))
  targets = np.clip((doc * noise).astype(int) + 2, 1, 512)
  inputs = np.clip(doc - targets + 4, 1, 512)
  return inputs, targets


def test_fill_rate_at_least_seqio_on_ul2_like_lengths():
  inputs, targets = _ul2_like(300, seed=0)
  examples = [{"inputs": np.arange(2, 2 + a) % 250 + 2, "targets": np.arange(b) % 250 + 2}
              for a, b in zip(inputs, targets)]
  lengths = {"inputs": 512, "targets": 512}
  fills = {}
  for name, converter in (("seqio", seqio.EncDecFeatureConverter()),
                          ("mixjax", features.PackedEncDecConverter())):
    rows = _rows(converter, examples, lengths)
    tokens = sum(np.count_nonzero(rows[k]) for k in ("encoder_input_tokens",
                                                     "decoder_target_tokens"))
    assert tokens == inputs.sum() + targets.sum()  # nothing lost
    fills[name] = tokens / (len(rows["encoder_input_tokens"]) * 1024)
  assert fills["mixjax"] >= fills["seqio"] + 0.05, fills


def test_rows_are_deterministic_across_buffers_and_keep_every_token():
  rng = np.random.default_rng(1)
  examples = [{"targets": rng.integers(2, 300, rng.integers(1, 30)).astype(np.int32)}
              for _ in range(70)]
  converter = features.PackedLMConverter(buffer_size=16)
  first = _rows(converter, examples, {"targets": 32})
  again = _rows(features.PackedLMConverter(buffer_size=16), examples, {"targets": 32})
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  kept = first["decoder_target_tokens"][first["decoder_segment_ids"] > 0]
  assert np.array_equal(np.sort(kept), np.sort(np.concatenate([e["targets"] for e in examples])))
  # Rows follow the stream: the first row starts with the first example.
  head = examples[0]["targets"]
  assert first["decoder_target_tokens"][0][:len(head)].tolist() == head.tolist()
  # Buffers pack on their own: 70 examples in buffers of 16 give 5 groups of rows, none mixing.
  assert len(first["decoder_segment_ids"]) >= 5


def test_example_longer_than_a_row_raises_instead_of_truncating():
  converter = features.feature_converter("prefix_lm")  # no length check: the sum must fit
  examples = [{"inputs": [5] * 9, "targets": [6] * 4}]
  with pytest.raises(tf.errors.OpError, match="does not fit a row of lengths \\[12\\]"):
    _rows(converter, examples, {"inputs": 6, "targets": 6})
  with pytest.raises(ValueError, match="never truncates"):
    packing.assign_rows(np.array([[3, 9]]), [4, 8])


def test_converters_keep_seqio_options():
  assert not features.feature_converter("enc_dec", pack=False).pack
  unpacked = _rows(features.feature_converter("lm", pack=False), [{"targets": [4, 5, 1]}],
                   {"targets": 6})
  assert unpacked["decoder_target_tokens"].tolist() == [[4, 5, 1, 0, 0, 0]]
  # With inputs, the decoder converter packs a prefix LM (as SeqIO's DecoderFeatureConverter).
  prefix = _rows(features.PackedLMConverter(), [{"inputs": [3, 1], "targets": [4, 1]}] * 2,
                 {"inputs": 2, "targets": 3})
  assert prefix["decoder_target_tokens"].tolist() == [[3, 1, 4, 1, 0]] * 2
  assert prefix["decoder_loss_weights"].tolist() == [[0, 0, 1, 1, 0]] * 2
  assert prefix["decoder_causal_attention"].tolist() == [[1, 1, 1, 0, 0]] * 2
  with pytest.raises(ValueError, match="use_custom_packing_ops"):
    features.PackedEncDecConverter(use_custom_packing_ops=True)
  with pytest.raises(ValueError, match="Unknown feature_converter 'dec'"):
    features.feature_converter("dec")
