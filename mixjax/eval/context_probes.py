"""Token batches for probes whose prompt follows context documents (the ICLM cross-document probes).

`mixjax.iclm.probes` builds the records (`documents`, `prompt`, `answer`, `candidates`); each
(probe, candidate) pair becomes one row laid out as in an ICLM training context: every document,
EOS, the prompt, the candidate, all in one segment, loss weights on the candidate only
(`evaluator.probe_batch` does the layout). An `Evaluator` takes the records themselves through
`extra_probes`; this module adds the check that no text holds `iclm_probes.DOC_BREAK` (NUL).
"""

from collections.abc import Sequence

import numpy as np

from mixjax.eval import evaluator
from mixjax.iclm import probes as iclm_probes


def probe_batch(probes: Sequence[dict], pad_to: int = 32
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """`evaluator.probe_batch` for probes with context documents (`documents`, then `prompt`,
  joined by EOS, in one segment), refusing texts that hold `iclm_probes.DOC_BREAK`.

  Returns `(batch, probe_index_N, is_answer_N)` as `evaluator.probe_batch` does: decoder features
  `[N, L]` (L a multiple of `pad_to`), one row per candidate.
  """
  for i, p in enumerate(probes):
    iclm_probes.check_documents([*p["documents"], p["prompt"]], f"Probe {i} ({p.get('kind')})")
  return evaluator.probe_batch(probes, pad_to=pad_to)
