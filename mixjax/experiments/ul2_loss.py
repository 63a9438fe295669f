"""UL2's claim, measured: one model that both infills and continues. Held-out documents are
scored by an LM run and a UL2 (prefix-LM) run on the same tokens, each in the format it
trained on:

- infilling: each document cut into chunks and span-corrupted once, seeded (UL2's R1
  denoiser: mean span 3, 15% noise; `denoisers.ul2_denoise`, so the same cuts and spans as
  training draws). The UL2 run reads `[NLU]` + the corrupted chunk + EOS and predicts the
  sentinel-marked spans; the LM run, which has no infilling format, predicts the same span
  tokens reading the original chunk left to right. `span_loss` is the mean loss over the span
  tokens (sentinels and EOS left out) in nats per token: what the UL2 run gains from the right
  context, against an LM's best. `span_loss_other_inputs` (UL2 only) scores the same targets
  after another chunk's inputs: what reading the inputs is worth.
- continuation: each document split in half (by tokens). The LM reads the first half causally;
  the UL2 run reads `[S2S]` + first half + EOS as its inputs (its S denoiser's, and
  `mixjax.infer`'s, format). `loss` is the mean loss of the second half and its EOS.

Losses are token-weighted means per domain; `mean` is the mean over domains.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from mixjax import vocab as vocab_lib
from mixjax.data.objectives import denoisers
from mixjax.experiments import scoring

R1 = denoisers.Denoiser("R1", rate=1.0, mode_token="[NLU]", mean_span_length=3,
                        corruption_rate=0.15)


@dataclasses.dataclass(frozen=True)
class InfillExample:
  """One span-corrupted chunk: `inputs` ([NLU], the chunk with sentinels, no EOS), `targets`
  (sentinel i, then span i, for each span; no EOS), `tokens` (the chunk) and `noise_T` (which
  chunk tokens the spans hold)."""
  inputs: tuple[int, ...]
  targets: tuple[int, ...]
  tokens: tuple[int, ...]
  noise_T: tuple[bool, ...]


def reconstruct(inputs: Sequence[int], targets: Sequence[int], vocabulary: seqio.Vocabulary
                ) -> tuple[list[int], list[bool]]:
  """The chunk a span-corrupted (inputs, targets) pair came from (inputs without a mode
  token), and which of its tokens were noise."""
  spans, current = {}, None
  for t in targets:
    if vocab_lib.is_sentinel(t, vocabulary):
      current = spans.setdefault(int(t), [])
    elif current is None:
      raise ValueError("Span-corruption targets must start with a sentinel.")
    else:
      current.append(int(t))
  tokens, noise = [], []
  for t in inputs:
    span = spans.get(int(t)) if vocab_lib.is_sentinel(t, vocabulary) else None
    if span is None:
      tokens.append(int(t))
      noise.append(False)
    else:
      tokens += span
      noise += [True] * len(span)
  return tokens, noise


def infill_examples(documents: Sequence[Sequence[int]], row_length: int,
                    vocabulary: seqio.Vocabulary, seed: int = 0,
                    denoiser: denoisers.Denoiser = R1) -> list[list[InfillExample]]:
  """Each document's chunks, span-corrupted by `denoiser` with its mode token, sized so that
  inputs + EOS + targets + EOS fit `row_length` (the decoder-only budget). Seeded; a pure
  function of the documents, the row length and `seed`."""
  documents = [list(map(int, d)) for d in documents]
  if not all(documents):
    raise ValueError("Empty documents give no infilling example; drop them first.")
  flat = tf.RaggedTensor.from_row_lengths(np.concatenate(documents).astype(np.int32),
                                          [len(d) for d in documents])
  dataset = tf.data.Dataset.from_tensor_slices(flat).map(lambda x: {"targets": x})
  mode = vocab_lib.mode_token_id(denoiser.mode_token, vocabulary)
  with seqio.utils.map_seed_manager(seed):
    examples = denoisers.ul2_denoise(dataset, {"targets": row_length},
                                     {"targets": seqio.Feature(vocabulary, add_eos=True)},
                                     denoisers=(denoiser,))
    examples = list(examples.as_numpy_iterator())
  # Chunks tile the documents in order, so each example's document is where its tokens fall.
  out, doc, filled = [[] for _ in documents], 0, 0
  for ex in examples:
    inputs, targets = [int(t) for t in ex["inputs"]], [int(t) for t in ex["targets"]]
    if inputs[0] != mode:
      raise ValueError(f"Expected the {denoiser.mode_token} mode token first, got {inputs[0]}.")
    tokens, noise = reconstruct(inputs[1:], targets, vocabulary)
    while filled == len(documents[doc]):
      doc, filled = doc + 1, 0
    if documents[doc][filled:filled + len(tokens)] != tokens:
      raise AssertionError("A span-corrupted chunk does not reconstruct its document.")
    filled += len(tokens)
    out[doc].append(InfillExample(tuple(inputs), tuple(targets), tuple(tokens), tuple(noise)))
  return out


def _mean(losses: Sequence[np.ndarray]) -> float:
  return float(np.concatenate(losses).mean()) if losses else float("nan")


def infill_loss(scorer: scoring.CheckpointScorer, examples: Sequence[InfillExample]) -> float:
  """Mean loss over the span tokens of `examples`: the UL2 run in its infilling format, an LM
  run reading each chunk left to right (see the module docstring)."""
  eos = scorer.vocabulary.eos_id
  if scorer.layout == "prefix_lm":
    losses = scorer.target_losses([list(e.targets) + [eos] for e in examples],
                                  [list(e.inputs) + [eos] for e in examples])
    span = [np.asarray([not vocab_lib.is_sentinel(t, scorer.vocabulary) for t in e.targets] + [False])
            for e in examples]
  else:
    losses = scorer.target_losses([list(e.tokens) for e in examples])
    span = [np.asarray(e.noise_T) for e in examples]
  return _mean([loss_T[mask_T] for loss_T, mask_T in zip(losses, span)])


def with_other_inputs(examples: Sequence[InfillExample], row_length: int,
                      seed: int = 0) -> list[InfillExample]:
  """The control for what a UL2 run reads from its inputs: each example's targets after
  another example's inputs (a seeded derangement-like shuffle), keeping the pairs that fit."""
  perm = np.random.default_rng(seed).permutation(len(examples))
  out = [dataclasses.replace(e, inputs=examples[j].inputs) for e, j in zip(examples, perm)]
  return [e for e in out if len(e.inputs) + len(e.targets) + 2 <= row_length]


def continuation_loss(scorer: scoring.CheckpointScorer, documents: Sequence[Sequence[int]]
                      ) -> float:
  """Mean loss of each document's second half and EOS after its first half (documents cut to
  what a row of the run holds with the extras)."""
  eos = scorer.vocabulary.eos_id
  documents = [list(d)[:scorer.row_length - 3] for d in documents]
  halves = [(d[:len(d) // 2], d[len(d) // 2:] + [eos]) for d in documents]
  if scorer.layout == "prefix_lm":
    s2s = vocab_lib.mode_token_id("[S2S]", scorer.vocabulary)
    losses = scorer.target_losses([c for _, c in halves], [[s2s] + p + [eos] for p, _ in halves])
  else:
    losses = [loss_T[len(p):] for loss_T, (p, _) in
              zip(scorer.target_losses([p + c for p, c in halves]), halves)]
  return _mean(losses)


def ul2_metrics(model_dir: str, texts: Mapping[str, Sequence[str]],
                seed: int = 0) -> dict[str, float]:
  """`infill/<domain>/span_loss` and `continuation/<domain>/loss` of one run, per domain of
  `texts` (`{domain: documents}`, tokenized by the run's vocabulary; empty ones dropped) and
  their `mean` over domains."""
  scorer = scoring.CheckpointScorer(model_dir)
  out = {}
  for domain, domain_texts in texts.items():
    docs = [list(scorer.vocabulary.encode(t)) for t in domain_texts if t]
    chunks = [e for doc in infill_examples(docs, scorer.row_length, scorer.vocabulary, seed)
              for e in doc]
    out[f"infill/{domain}/span_loss"] = infill_loss(scorer, chunks)
    # What the inputs are worth to a UL2 run (an LM has no inputs: nan).
    out[f"infill/{domain}/span_loss_other_inputs"] = (
        infill_loss(scorer, with_other_inputs(chunks, scorer.row_length, seed))
        if scorer.layout == "prefix_lm" else float("nan"))
    out[f"continuation/{domain}/loss"] = continuation_loss(scorer, docs)
  for kind, name in (("infill", "span_loss"), ("infill", "span_loss_other_inputs"),
                     ("continuation", "loss")):
    values = [out[f"{kind}/{d}/{name}"] for d in texts]
    out[f"{kind}/mean/{name}"] = float(np.mean(values))
  return out
