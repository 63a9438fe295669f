"""The batch format: feature converters for training, and the same features for prompts.

Training batches come from three layouts: `lm` (decoder-only next-token prediction),
`prefix_lm` (inputs and targets in one row, bidirectional over the inputs through
`decoder_causal_attention`) and `enc_dec` (encoder inputs, decoder targets). Their converters are
SeqIO's (`DecoderFeatureConverter`, `PrefixLMFeatureConverter`, `EncDecFeatureConverter`: same
constructor arguments, validation and output features), packed by `mixjax.data.packing` instead
of SeqIO's one-example-at-a-time packer: a buffer of examples at once, best-fit decreasing, so
rows are fuller and packing costs a fraction of the CPU (tests/test_packing.py checks them
against SeqIO's). `rows()` builds the unpacked features of the same layouts from token lists,
for probes and prompts, so evaluation and inference see exactly what training saw
(tests/test_features.py compares it with SeqIO).
"""

import functools
from typing import Sequence

import numpy as np
import seqio

from mixjax.data import packing


class _Packed:
  """Packs with `mixjax.data.packing` when `pack=True`; `buffer_size`: examples packed together
  (default: the longest row length, as SeqIO's packer)."""

  def __init__(self, *args, buffer_size: int | None = None, **kwargs):
    if kwargs.get("use_custom_packing_ops"):
      raise ValueError(f"{type(self).__name__} packs with mixjax.data.packing; "
                       "use_custom_packing_ops (tensor2tensor's ops) has no meaning here.")
    super().__init__(*args, **kwargs)
    self.buffer_size = buffer_size

  def _pack_rows(self, ds, features: Sequence[str], pack_fn, task_feature_lengths):
    return packing.packed_dataset(ds, features, pack_fn,
                                  self.get_model_feature_lengths(task_feature_lengths),
                                  self.buffer_size)


class PackedEncDecConverter(_Packed, seqio.EncDecFeatureConverter):
  """`seqio.EncDecFeatureConverter`, packed by `mixjax.data.packing`: an example's inputs and
  targets share a row and a segment id."""

  def _convert_features(self, ds, task_feature_lengths):
    if not self.pack:
      return super()._convert_features(ds, task_feature_lengths)
    pack_fn = functools.partial(packing.pack_enc_dec,
                                inputs_length=task_feature_lengths["inputs"],
                                targets_length=task_feature_lengths["targets"], bos_id=self.bos_id)
    return self._pack_rows(ds, ("inputs", "targets"), pack_fn, task_feature_lengths)


class PackedPrefixLMConverter(_Packed, seqio.PrefixLMFeatureConverter):
  """`seqio.PrefixLMFeatureConverter`, packed by `mixjax.data.packing`: each example is
  inputs ++ targets in one segment of a row of the summed length."""

  def _convert_features(self, ds, task_feature_lengths):
    if not self.pack:
      return super()._convert_features(ds, task_feature_lengths)
    pack_fn = functools.partial(packing.pack_prefix_lm,
                                length=sum(task_feature_lengths.values()), bos_id=self.bos_id,
                                loss_on_targets_only=self.loss_on_targets_only)
    return self._pack_rows(ds, ("inputs", "targets"), pack_fn, task_feature_lengths)


class _PackedCausalLMConverter(_Packed, seqio.LMFeatureConverter):
  """`seqio.LMFeatureConverter`, packed by `mixjax.data.packing`."""

  def _convert_features(self, ds, task_feature_lengths):
    if not self.pack:
      return super()._convert_features(ds, task_feature_lengths)
    pack_fn = functools.partial(packing.pack_lm, length=task_feature_lengths["targets"],
                                bos_id=self.bos_id)
    return self._pack_rows(ds, ("targets",), pack_fn, task_feature_lengths)


class PackedLMConverter(seqio.DecoderFeatureConverter):
  """`seqio.DecoderFeatureConverter` (causal LM on `targets`, prefix LM when the task also has
  `inputs`), packed by `mixjax.data.packing`."""

  def __init__(self, loss_on_targets_only: bool = True, pack: bool = True,
               use_custom_packing_ops: bool = False, apply_length_check: bool = True,
               bos_id: int = 0, passthrough_features=None,
               buffer_size: int | None = None):
    super().__init__(loss_on_targets_only=loss_on_targets_only, pack=pack,
                     apply_length_check=apply_length_check, bos_id=bos_id,
                     passthrough_features=passthrough_features)
    common = dict(pack=pack, use_custom_packing_ops=use_custom_packing_ops,
                  apply_length_check=apply_length_check, bos_id=bos_id, buffer_size=buffer_size)
    self.prefixlm_feature_converter = PackedPrefixLMConverter(
        loss_on_targets_only=loss_on_targets_only, passthrough_features=passthrough_features,
        **common)
    self.strictlm_feature_converter = _PackedCausalLMConverter(**common)
    self.buffer_size = buffer_size


FEATURE_CONVERTERS = {
    "lm": PackedLMConverter,
    "prefix_lm": PackedPrefixLMConverter,
    "enc_dec": PackedEncDecConverter,
}


def feature_converter(name: str, pack: bool = True) -> seqio.FeatureConverter:
  """The converter of a layout name (`lm` | `prefix_lm` | `enc_dec`)."""
  try:
    cls = FEATURE_CONVERTERS[name]
  except KeyError:
    raise ValueError(f"Unknown feature_converter {name!r}; valid: "
                     f"{sorted(FEATURE_CONVERTERS)}.") from None
  if name == "prefix_lm":
    # Inputs and targets share the summed row length; the denoisers budget the sum (an
    # example longer than the row still raises in packing).
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
