"""The batch format: SeqIO's feature converters for training, and the same features for prompts.

Training batches come from SeqIO's converters (packed): `lm` (decoder-only next-token
prediction), `prefix_lm` (inputs and targets in one row, bidirectional over the inputs through
`decoder_causal_attention`) and `enc_dec` (encoder inputs, decoder targets). `rows()` builds the
unpacked features of the same layouts from token lists, for probes and prompts, so evaluation and
inference see exactly what training saw (test: tests/test_features.py compares it with SeqIO).
"""

from typing import Sequence

import numpy as np
import seqio

FEATURE_CONVERTERS = {
    "lm": seqio.DecoderFeatureConverter,
    "prefix_lm": seqio.PrefixLMFeatureConverter,
    "enc_dec": seqio.EncDecFeatureConverter,
}


def feature_converter(name: str, pack: bool = True) -> seqio.FeatureConverter:
  """The SeqIO converter of a layout name (`lm` | `prefix_lm` | `enc_dec`)."""
  try:
    cls = FEATURE_CONVERTERS[name]
  except KeyError:
    raise ValueError(f"Unknown feature_converter {name!r}; valid: "
                     f"{sorted(FEATURE_CONVERTERS)}.") from None
  if cls is seqio.PrefixLMFeatureConverter:
    # Inputs and targets share the summed row length; the denoisers budget the sum.
    return cls(pack=pack, apply_length_check=False)
  return cls(pack=pack)


def _padded_length(lengths: Sequence[int], pad_to: int) -> int:
  return max(-(-max(lengths) // pad_to) * pad_to, pad_to)


def _decoder_rows(targets: Sequence[Sequence[int]], scored_from: Sequence[int],
                  causal_until: Sequence[int] | None, pad_to: int) -> dict[str, np.ndarray]:
  """Decoder features `[N, L]`: loss weights from `scored_from`, bidirectional before
  `causal_until` (prefix-LM: SeqIO counts one position past the inputs)."""
  length = _padded_length([len(t) for t in targets], pad_to)
  tokens_NL = np.zeros((len(targets), length), np.int32)
  weights_NL = np.zeros((len(targets), length), np.float32)
  for r, (seq, start) in enumerate(zip(targets, scored_from)):
    tokens_NL[r, :len(seq)] = seq
    weights_NL[r, start:len(seq)] = 1.0
  positions_L = np.arange(length, dtype=np.int32)
  lengths_N1 = np.asarray([len(t) for t in targets])[:, None]
  batch = {"decoder_target_tokens": tokens_NL,
           "decoder_input_tokens": np.pad(tokens_NL[:, :-1], ((0, 0), (1, 0))),
           "decoder_loss_weights": weights_NL,
           "decoder_segment_ids": (positions_L < lengths_N1).astype(np.int32),
           "decoder_positions": np.broadcast_to(positions_L, tokens_NL.shape).copy()}
  if causal_until is not None:
    batch["decoder_causal_attention"] = (
        positions_L < np.asarray(causal_until)[:, None]).astype(np.int32)
  return batch


def rows(layout: str, inputs: Sequence[Sequence[int]] | None,
         targets: Sequence[Sequence[int]], pad_to: int = 32,
         scored_from: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Unpacked model features for N examples, as the layout's SeqIO converter would give them.

  `lm`: `targets` only (a prompt is a causal prefix of the targets; `scored_from` gives where
  the scored part of each row starts, default 0). `prefix_lm`: each row is inputs ++ targets,
  scored on the targets, bidirectional over the inputs. `enc_dec`: encoder inputs, decoder
  targets. Lengths are padded up to a multiple of `pad_to`, so few shapes get compiled.
  """
  if layout == "lm":
    if inputs is not None:
      raise ValueError("The lm layout has no inputs; put the prompt at the start of targets.")
    return _decoder_rows(targets, scored_from or [0] * len(targets), None, pad_to)
  if inputs is None or len(inputs) != len(targets):
    raise ValueError(f"The {layout} layout needs one inputs list per targets list.")
  if layout == "prefix_lm":
    return _decoder_rows([list(i) + list(t) for i, t in zip(inputs, targets)],
                         [len(i) for i in inputs], [len(i) + 1 for i in inputs], pad_to)
  if layout == "enc_dec":
    batch = _decoder_rows(targets, [0] * len(targets), None, pad_to)
    encoder = _decoder_rows(inputs, [0] * len(inputs), None, pad_to)
    batch["encoder_input_tokens"] = encoder["decoder_target_tokens"]
    batch["encoder_segment_ids"] = encoder["decoder_segment_ids"]
    batch["encoder_positions"] = encoder["decoder_positions"]
    return batch
  raise ValueError(f"Unknown layout {layout!r}; valid: {sorted(FEATURE_CONVERTERS)}.")
