"""The `ul2` objective: UL2's mixture of denoisers (denoisers.py) over any registered task.

Two layouts:

* `prefix_lm` (decoder-only): inputs and targets share one packed row whose length is the sum of
  TASK_FEATURE_LENGTHS' `inputs` and `targets` (SeqIO's PrefixLMFeatureConverter rule), so the
  denoisers budget that sum;
* `enc_dec`: inputs <= the `inputs` length, targets <= the `targets` length.

Prompt format (probes, `mixjax.infer`): inputs are the mode token ([S2S] unless another is asked
for; none when `ul2_denoise.use_mode_tokens = False`), the prompt and EOS, as the S denoiser's
inputs in training; the continuation is the targets.
"""

from typing import Sequence

import gin
import seqio

from mixjax import vocab as vocab_lib
from mixjax.data.objectives import base
from mixjax.data.objectives import denoisers

MODES = {"S2S": "[S2S]", "NLU": "[NLU]", "NLG": "[NLG]"}


def _denoise_prefix_lm(dataset, sequence_length, output_features):
  """ul2_denoise with the decoder-only budget: inputs + targets share the summed length."""
  total = {"targets": sum(sequence_length.values())}
  return denoisers.ul2_denoise(dataset, total, output_features)


def uses_mode_tokens() -> bool:
  """Whether the denoisers prepend mode tokens, as the run's gin config says (default True)."""
  try:
    return bool(gin.query_parameter("ul2_denoise.use_mode_tokens"))
  except ValueError:  # not bound
    return True


class UL2(base.Objective):
  name = "ul2"
  layouts = {"prefix_lm": "decoder", "enc_dec": "encoder_decoder"}

  def output_features(self, vocabulary):
    return {"inputs": seqio.Feature(vocabulary, add_eos=True),
            "targets": seqio.Feature(vocabulary, add_eos=True)}

  def preprocessors(self, layout, long_documents):
    del long_documents  # denoiser chunks tile every document: nothing is split off or trimmed
    self.check(layout)
    if layout == "prefix_lm":
      # Not append_eos_after_trim: it would trim inputs and targets to their own lengths, but
      # here they share the summed row (the denoisers budget the sum, EOS included), so a long
      # prefix lost its tail, sentinels and all.
      return [_denoise_prefix_lm, seqio.preprocessors.append_eos]
    return [denoisers.ul2_denoise, seqio.preprocessors.append_eos_after_trim]

  def prompt(self, prompt_ids: Sequence[int], vocabulary, mode=None,
             mode_tokens: bool | None = None) -> base.Prompt:
    mode = mode or "S2S"
    token = MODES.get(mode, mode)
    if token not in vocab_lib.MODE_TOKENS:
      raise ValueError(f"Unknown UL2 mode {mode!r}; valid: {', '.join(MODES)}.")
    mode_tokens = uses_mode_tokens() if mode_tokens is None else mode_tokens
    head = [vocab_lib.mode_token_id(token, vocabulary)] if mode_tokens else []
    return base.Prompt(inputs=tuple(head + list(prompt_ids) + [vocabulary.eos_id]))
