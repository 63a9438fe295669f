"""The `lm` objective: next-token prediction over whole documents (decoder-only)."""

from typing import Sequence

import seqio
import tensorflow as tf

from mixjax.data.objectives import base

LONG_DOCUMENTS = ("split", "trim")


def split_to_length(dataset: tf.data.Dataset, sequence_length, feature: str = "targets"
                    ) -> tf.data.Dataset:
  """Splits each document's tokens into consecutive pieces of at most the feature's length.

  Without this, the feature converter would trim every document longer than a row and its tail
  would never be trained on. Only `feature` is kept.
  """
  length = sequence_length[feature]

  def pieces(example):
    tokens = example[feature]
    n = tf.shape(tokens, out_type=tf.int64)[0]
    splits = tf.concat([tf.range(0, n, length, dtype=tf.int64), [n]], axis=0)
    return tf.data.Dataset.from_tensor_slices(
        {feature: tf.RaggedTensor.from_row_splits(tokens, splits)})
  return dataset.flat_map(pieces)


class LM(base.Objective):
  name = "lm"
  layouts = {"lm": "decoder"}

  def output_features(self, vocabulary):
    return {"targets": seqio.Feature(vocabulary, add_eos=True)}

  def preprocessors(self, layout, long_documents):
    self.check(layout)
    if long_documents == "split":  # EOS ends the document, not each piece
      return [seqio.preprocessors.append_eos, split_to_length]
    if long_documents == "trim":
      return [seqio.preprocessors.append_eos_after_trim]
    raise ValueError(f"long_documents={long_documents!r}; valid: {', '.join(LONG_DOCUMENTS)}.")

  def prompt(self, prompt_ids: Sequence[int], vocabulary, mode=None) -> base.Prompt:
    if mode not in (None, "none"):
      raise ValueError(f"mode={mode!r}: an lm run has no mode tokens; leave mode unset.")
    return base.Prompt(inputs=None, prefix=tuple(prompt_ids))

  def variant_tag(self, layout):
    return ""
