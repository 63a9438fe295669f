"""Cross-document use, measured directly: what a document costs after other documents in its
context, against what it costs alone.

In-Context Pretraining helps exactly when later documents of a context get cheaper because of the
earlier ones. Two measurements, both on held-out text and both from per-token losses:

- by position: the documents of held-out contexts (joined by EOS in one segment, as the ICLM
  training task joins them), each document's loss (nats per token, its tokens and closing EOS)
  in its context and alone in a row of its own, grouped by position (1st, 2nd, 3rd+). `gain` is
  alone minus in context: what the earlier documents bought.
- related pairs: a document after a related one (a colleague's bio) against the same document
  after an unrelated one of its domain, and alone. `related_gain` (after unrelated minus after
  related) is what the relation itself bought, beyond any gain from a same-domain context.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from mixjax.experiments import scoring

POSITIONS = ("pos1", "pos2", "pos3+")


@dataclasses.dataclass(frozen=True)
class Pair:
  """A held-out document (`second`) after a related document and after an unrelated one."""
  related: str
  unrelated: str
  second: str


class ContextScorer:
  """Per-document losses of an LM run's newest checkpoint, on one device."""

  def __init__(self, model_dir: str, batch_rows: int = 16, pad_to: int = 64):
    self.checkpoint = scoring.CheckpointScorer(model_dir, batch_rows, pad_to)
    if self.checkpoint.layout != "lm":
      raise ValueError(f"{model_dir} trained a {self.checkpoint.layout!r} layout; context losses "
                       "read decoder-only causal rows (feature_converter 'lm').")
    self.vocabulary = self.checkpoint.vocabulary
    self.row_length = self.checkpoint.row_length

  def _encode(self, documents: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokens of the documents, each closed by EOS, and each document's token span."""
    tokens, spans = [], []
    for doc in documents:
      ids = list(self.vocabulary.encode(doc)) + [self.vocabulary.eos_id]
      spans.append((len(tokens), len(tokens) + len(ids)))
      tokens += ids
    return tokens, spans

  def fits(self, documents: Sequence[str]) -> bool:
    """Whether the documents, each closed by EOS, fit one row of the run."""
    return self._encode(documents)[1][-1][1] <= self.row_length

  def document_losses(self, contexts: Sequence[Sequence[str]]) -> list[list[float]]:
    """Mean loss of each document of each context, read in its context: the documents that fit
    the run's row length, from the first (a training row cuts the rest; a first document longer
    than the row is cut to it)."""
    rows, spans = [], []
    for documents in contexts:
      tokens, doc_spans = self._encode(documents)
      # A first document longer than the row is scored on the part a row holds.
      kept = [s for s in doc_spans if s[1] <= self.row_length] or [(0, self.row_length)]
      rows.append(tokens[:kept[-1][1]])
      spans.append(kept)
    losses = self.checkpoint.target_losses(rows)
    return [[float(loss_T[a:b].mean()) for a, b in doc_spans]
            for loss_T, doc_spans in zip(losses, spans)]

  def alone_losses(self, documents: Sequence[str]) -> list[float]:
    """Mean loss of each document read alone (its own row, cut to the row length)."""
    return [doc[0] for doc in self.document_losses([[d] for d in documents])]


def position_metrics(scorer: ContextScorer, contexts: Sequence[Sequence[str]],
                     prefix: str) -> dict[str, float]:
  """`{prefix}/<pos>/{in_context,alone,gain,docs}` over the documents of `contexts`."""
  in_context = scorer.document_losses(contexts)
  flat_docs = [doc for documents, losses in zip(contexts, in_context)
               for doc in documents[:len(losses)]]
  alone = iter(scorer.alone_losses(flat_docs))
  by_position = {p: ([], []) for p in POSITIONS}
  for losses in in_context:
    for k, loss in enumerate(losses):
      ctx, solo = by_position[POSITIONS[min(k, len(POSITIONS) - 1)]]
      ctx.append(loss)
      solo.append(next(alone))
  metrics = {}
  for position, (ctx, solo) in by_position.items():
    if ctx:
      name = f"{prefix}/{position}"
      metrics.update({f"{name}/in_context": float(np.mean(ctx)),
                      f"{name}/alone": float(np.mean(solo)),
                      f"{name}/gain": float(np.mean(np.subtract(solo, ctx))),
                      f"{name}/docs": float(len(ctx))})
  return metrics


def pair_metrics(scorer: ContextScorer, pairs: Sequence[Pair], prefix: str) -> dict[str, float]:
  """The second document's loss after its related document, after the unrelated one and alone;
  `related_gain` = after unrelated - after related (per pair, then averaged). Pairs whose two
  documents do not fit one row either way are left out (`pairs` counts the rest)."""
  pairs = [p for p in pairs
           if scorer.fits([p.related, p.second]) and scorer.fits([p.unrelated, p.second])]
  if not pairs:
    return {}
  after_related = [d[1] for d in scorer.document_losses([[p.related, p.second] for p in pairs])]
  after_unrelated = [d[1] for d in scorer.document_losses([[p.unrelated, p.second]
                                                           for p in pairs])]
  alone = scorer.alone_losses([p.second for p in pairs])
  return {f"{prefix}/after_related": float(np.mean(after_related)),
          f"{prefix}/after_unrelated": float(np.mean(after_unrelated)),
          f"{prefix}/alone": float(np.mean(alone)),
          f"{prefix}/related_gain": float(np.mean(np.subtract(after_unrelated, after_related))),
          f"{prefix}/pairs": float(len(pairs))}


def related_pairs(records: Sequence[dict], seed: int = 0, max_pairs: int = 200) -> list[Pair]:
  """Pairs from bios-like records (`person`, `related_people`, `text`): each record after a
  record about one of its related people, and after a record about nobody related to it (a
  seeded draw). Pure function of the records and `seed`."""
  rng = np.random.default_rng(seed)
  by_person = {}
  for r in records:
    by_person.setdefault(r["person"], []).append(r)
  pairs = []
  for second in records:
    if len(pairs) == max_pairs:
      break
    related = [r for p in second["related_people"] for r in by_person.get(p, ())]
    if not related:
      continue
    excluded = {second["person"], *second["related_people"]}
    strangers = [r for r in records
                 if r["person"] not in excluded and not excluded & set(r["related_people"])]
    if not strangers:
      continue
    first = related[rng.integers(len(related))]
    stranger = strangers[rng.integers(len(strangers))]
    pairs.append(Pair(first["text"], stranger["text"], second["text"]))
  return pairs
