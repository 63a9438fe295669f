"""`features.rows` (probe and prompt features) against SeqIO's own feature converters, and the
probe rows each objective's prompt format gives."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from mixjax import vocab as vocab_lib
from mixjax.data import features
from mixjax.data import pipeline
from mixjax.eval import evaluator as evaluation

# Token lists ending in EOS (1), of different lengths, as a task's examples would be.
INPUTS = [[5, 9, 4, 1], [7, 1], [3, 8, 8, 6, 2, 1]]
TARGETS = [[11, 12, 1], [13, 14, 15, 16, 1], [17, 1]]
PAD_TO = 16  # rows are padded to 16; SeqIO to the task feature lengths below (<= 16)
SEQIO = {
    "lm": (seqio.DecoderFeatureConverter, {"targets": 12}),
    "prefix_lm": (seqio.PrefixLMFeatureConverter, {"inputs": 7, "targets": 6}),
    "enc_dec": (seqio.EncDecFeatureConverter, {"inputs": 10, "targets": 9}),
}


def _seqio_rows(layout, examples, pack):
  """SeqIO's converted features of `examples` (dicts of token lists), stacked `[N, L]`."""
  converter_cls, lengths = SEQIO[layout]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]})
  converted = converter_cls(pack=pack)(ds, lengths)
  out = list(converted.as_numpy_iterator())
  return {k: np.stack([row[k] for row in out]) for k in out[0]}


def _examples(layout):
  if layout == "lm":
    return [{"targets": t} for t in TARGETS]
  return [{"inputs": i, "targets": t} for i, t in zip(INPUTS, TARGETS)]


def _mixjax_rows(layout):
  return features.rows(layout, None if layout == "lm" else INPUTS, TARGETS, pad_to=PAD_TO)


def _assert_prefix_equal(name, ours_NP, theirs_NL, zero_tail=True):
  """`ours` matches SeqIO's on SeqIO's L positions; past them it is padding (zeros)."""
  length = theirs_NL.shape[1]
  assert ours_NP.shape[1] >= length, name
  np.testing.assert_array_equal(ours_NP[:, :length], theirs_NL, err_msg=name)
  if zero_tail:
    assert not ours_NP[:, length:].any(), name


@pytest.mark.parametrize("layout", SEQIO)
def test_rows_match_seqio_unpacked(layout):
  theirs = _seqio_rows(layout, _examples(layout), pack=False)
  ours = _mixjax_rows(layout)
  expected_keys = {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"}
  expected_keys |= {"lm": set(), "prefix_lm": {"decoder_causal_attention"},
                    "enc_dec": {"encoder_input_tokens"}}[layout]
  assert set(theirs) == expected_keys
  for name, value in theirs.items():
    _assert_prefix_equal(name, ours[name], value)


@pytest.mark.parametrize("layout", ["lm", "enc_dec"])  # prefix_lm's decoder rows are lm's
def test_segments_and_positions_match_seqio_packed_one_example_per_row(layout):
  """Segment ids and positions only come out of SeqIO's packed converters: pack each example
  alone, so its row is the unpacked one. Positions past an example are padding to SeqIO (0) but
  count on in rows; the model ignores them (segment 0), so only real positions are compared."""
  ours = _mixjax_rows(layout)
  prefixes = ("decoder", "encoder") if layout == "enc_dec" else ("decoder",)
  for r, example in enumerate(_examples(layout)):
    theirs = _seqio_rows(layout, [example], pack=True)
    for prefix in prefixes:
      segments = theirs[f"{prefix}_segment_ids"]
      _assert_prefix_equal(f"{prefix}_segment_ids", ours[f"{prefix}_segment_ids"][r:r + 1],
                           segments)
      real = segments[0] > 0
      np.testing.assert_array_equal(ours[f"{prefix}_positions"][r, :real.size][real],
                                    theirs[f"{prefix}_positions"][0][real])
    for name in ("decoder_target_tokens", "decoder_loss_weights"):
      _assert_prefix_equal(name, ours[name][r:r + 1], theirs[name])


def test_lm_rows_score_exactly_the_continuation():
  prompts, continuations = [[5, 6, 7], [8]], [[9, 10, 1], [11, 12, 13, 1]]
  batch = features.rows("lm", None, [p + c for p, c in zip(prompts, continuations)], pad_to=8,
                        scored_from=[len(p) for p in prompts])
  assert batch["decoder_loss_weights"].tolist() == [[0, 0, 0, 1, 1, 1, 0, 0],
                                                    [0, 1, 1, 1, 1, 0, 0, 0]]
  assert batch["decoder_target_tokens"][1].tolist() == [8, 11, 12, 13, 1, 0, 0, 0]
  assert "decoder_causal_attention" not in batch


def test_rows_reject_mismatched_inputs():
  with pytest.raises(ValueError, match="no inputs"):
    features.rows("lm", [[1]], [[2]])
  with pytest.raises(ValueError, match="one inputs list per targets list"):
    features.rows("prefix_lm", [[1]], [[2], [3]])
  with pytest.raises(ValueError, match="Unknown layout 'dec'"):
    features.rows("dec", [[1]], [[2]])


PROBE = {"prompt": "Q: 2 + 2 =", "answer": " 4", "candidates": [" 5", " 4"]}


def test_ul2_prefix_lm_probe_sees_mode_prompt_and_eos_bidirectionally():
  vocab = vocab_lib.get_vocabulary()
  data = pipeline.DataConfig("mixjax_synthetic_math", {"inputs": 32, "targets": 32}, 4,
                             feature_converter="prefix_lm", objective="ul2")
  batch, probe_index_N, is_answer_N = evaluation.probe_batch([PROBE], pad_to=16, data=data)
  assert probe_index_N.tolist() == [0, 0] and is_answer_N.tolist() == [False, True]
  inputs = [vocab_lib.mode_token_id("[S2S]")] + list(vocab.encode(PROBE["prompt"])) + [1]
  candidate = list(vocab.encode(" 4"))
  row = inputs + candidate
  length = 16 * -(-len(row) // 16)
  assert batch["decoder_target_tokens"][1].tolist() == row + [0] * (length - len(row))
  assert batch["decoder_causal_attention"][1].tolist() == (
      [1] * (len(inputs) + 1) + [0] * (length - len(inputs) - 1))
  assert batch["decoder_loss_weights"][1].tolist() == (
      [0] * len(inputs) + [1] * len(candidate) + [0] * (length - len(row)))
  # The same row as SeqIO's prefix-LM converter makes of the example {inputs, candidate}.
  ds = tf.data.Dataset.from_tensors({"inputs": np.int32(inputs), "targets": np.int32(candidate)})
  theirs = next(seqio.PrefixLMFeatureConverter(pack=False)(
      ds, {"inputs": len(inputs), "targets": len(candidate) + 1}).as_numpy_iterator())
  for name, value in theirs.items():
    _assert_prefix_equal(name, batch[name][1:2], value[None])


def test_lm_probe_rows_are_prompt_then_candidate_in_one_causal_row():
  """As before the layout refactor: one causal row, loss weights on the candidate only."""
  batch, _, _ = evaluation.probe_batch([PROBE], pad_to=16,
                                       data=pipeline.DataConfig("x", {"targets": 32}, 4))
  vocab = vocab_lib.get_vocabulary()
  prompt = list(vocab.encode(PROBE["prompt"]))
  expected = {"decoder_target_tokens": [], "decoder_loss_weights": []}
  for cand in PROBE["candidates"]:
    row = prompt + list(vocab.encode(cand))
    expected["decoder_target_tokens"].append(row + [0] * (16 - len(row)))
    expected["decoder_loss_weights"].append([0] * len(prompt) + [1] * (len(row) - len(prompt))
                                            + [0] * (16 - len(row)))
  assert set(batch) == {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                        "decoder_segment_ids", "decoder_positions"}
  for name, rows in expected.items():
    assert batch[name].tolist() == rows, name
  targets = np.asarray(expected["decoder_target_tokens"])
  np.testing.assert_array_equal(batch["decoder_input_tokens"],
                                np.pad(targets[:, :-1], ((0, 0), (1, 0))))
  np.testing.assert_array_equal(batch["decoder_segment_ids"], (targets > 0).astype(np.int32))
  np.testing.assert_array_equal(batch["decoder_positions"][0], np.arange(16))
