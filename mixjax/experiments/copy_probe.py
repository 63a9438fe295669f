"""Does a model copy? A seeded string of made-up words, then the same string again: once inside
one document (`within`: separated by ". ") and once across a document boundary (`across`:
separated by EOS, as ICLM contexts join documents). The made-up words are unpredictable except
by copying, so a model that copies pays far less for the repeat than for the first occurrence
(a perfect copier pays ~0); one that does not pays the same for both.

`copy/<format>/{first,repeat,gain}`: mean loss (nats per token) of the first occurrence's tokens
after its first word (no model can guess how a fresh string starts), of the same tokens in the
repeat, and first − repeat, over the probes.
"""

from collections.abc import Sequence

import numpy as np

from mixjax.experiments import scoring

FORMATS = ("within", "across")


def copy_metrics(scorer: scoring.CheckpointScorer, strings: Sequence[str],
                 prefix: str = "copy") -> dict[str, float]:
  """The figures of the module docstring for an LM run's `scorer`, over `strings`."""
  if scorer.layout != "lm":
    raise ValueError(f"The copy probe reads causal rows; this run trained {scorer.layout!r}.")
  vocabulary = scorer.vocabulary
  separators = {"within": list(vocabulary.encode(". ")), "across": [vocabulary.eos_id]}
  out = {}
  for name in FORMATS:
    rows, spans = [], []
    for text in strings:
      ids = list(vocabulary.encode(text))
      skip = len(vocabulary.encode(text.split(" ")[0] + " "))
      second = len(ids) + len(separators[name])
      rows.append(ids + separators[name] + ids)
      spans.append((skip, len(ids), second + skip, second + len(ids)))
    losses = scorer.target_losses(rows)
    first = [loss_T[a:b].mean() for loss_T, (a, b, _, _) in zip(losses, spans)]
    repeat = [loss_T[c:d].mean() for loss_T, (_, _, c, d) in zip(losses, spans)]
    out.update({f"{prefix}/{name}/first": float(np.mean(first)),
                f"{prefix}/{name}/repeat": float(np.mean(repeat)),
                f"{prefix}/{name}/gain": float(np.mean(np.subtract(first, repeat)))})
  return out
