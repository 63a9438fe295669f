"""Token batches for probes whose prompt follows context documents (the ICLM cross-document probes).

`mixjax.iclm.probes` builds the records (`documents`, `prompt`, `answer`, `candidates`); here each
(probe, candidate) pair becomes one row laid out as in an ICLM training context: every document,
EOS, the prompt, the candidate, all in one segment, loss weights on the candidate only. Rows are
scored as the corpus's own probes are (`evaluator.probe_accuracy` over mean NLL per candidate
token), so an `Evaluator` takes these batches in its `probes` unchanged.
"""

from collections.abc import Sequence

import numpy as np

from mixjax import vocab as vocab_lib
from mixjax.eval import evaluator
from mixjax.iclm import probes as iclm_probes


def probe_batch(probes: Sequence[dict], pad_to: int = 32
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """`evaluator.probe_batch` for probes with context documents: `documents`, then `prompt`,
  joined by EOS, in one segment.

  Returns `(batch, probe_index_N, is_answer_N)` as `evaluator.probe_batch` does: decoder features
  `[N, L]` (L a multiple of `pad_to`), one row per candidate.
  """
  vocab = vocab_lib.get_vocabulary()
  # `evaluator.probe_batch` encodes text prompts, which cannot hold EOS: documents are joined by a
  # character no probe text holds, and its token is swapped for EOS afterwards.
  (break_id,) = vocab.encode(iclm_probes.DOC_BREAK)
  for i, p in enumerate(probes):
    iclm_probes.check_documents([*p["documents"], p["prompt"]], f"Probe {i} ({p.get('kind')})")
  joined = [dict(p, prompt=iclm_probes.DOC_BREAK.join([*p["documents"], p["prompt"]]))
            for p in probes]
  batch, probe_index_N, is_answer_N = evaluator.probe_batch(joined, pad_to=pad_to)
  for key in ("decoder_target_tokens", "decoder_input_tokens"):
    batch[key] = np.where(batch[key] == break_id, vocab.eos_id, batch[key]).astype(batch[key].dtype)
  return batch, probe_index_N, is_answer_N
