"""Per-domain evaluation: validation loss of each task in the mixture, and probe accuracy.

A probe is a prompt with candidate answers (one right). The model scores each candidate by the
mean negative log-likelihood per token of its tokens after the prompt (per-token, so that short
candidates are not favoured); the probe is answered correctly when the right candidate scores
best. Chance is 1 / number of candidates. Probes may carry a `kind` (bios `closed_book` and
`in_context`, ...); each kind is reported on its own as `probe/<domain>/<kind>/accuracy`.
"""

import dataclasses

import flax.linen as nn
import gin
import jax
import numpy as np
import seqio

from mixjax.data import tasks as lm_tasks
from mixjax.data import pipeline
from mixjax import vocab as vocab_lib
from mixjax.training import partitioning
from mixjax.training import trainer


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  period: int = 100            # evaluate every N steps (and at the end); 0 = only at the end
  num_batches: int = 4         # validation batches per domain
  batch_size: int = 32         # sequences per eval batch
  max_probes: int = 100        # per domain and probe kind


def _task_names(name: str) -> list[str]:
  provider = pipeline.get_provider(name)
  if isinstance(provider, seqio.Mixture):
    return sorted(t.name for t in provider.tasks)
  return [provider.name]


def probe_sets(domain: str, probes, max_probes: int) -> dict[str, list[dict]]:
  """Probes grouped under their metric name: `<domain>/<kind>`, or `<domain>` when kindless.

  Keeps the first `max_probes` of each group, so that a domain's easy and hard kinds are
  reported side by side instead of one crowding out the other.
  """
  sets = {}
  for probe in probes:
    name = f"{domain}/{probe['kind']}" if probe.get("kind") else domain
    group = sets.setdefault(name, [])
    if len(group) < max_probes:
      group.append(probe)
  return sets


def probe_batch(probes, pad_to: int = 32, encoder_decoder: bool = False
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Token arrays for every (probe, candidate) pair.

  Decoder-only: prompt and candidate form one sequence, loss weights on the candidate only.
  Encoder-decoder: the prompt is the encoder input, the candidate the decoder target.
  Returns (batch `[N, L]` features, probe_index_N, is_answer_N).
  """
  vocab = vocab_lib.get_vocabulary()
  rows, probe_index, is_answer = [], [], []
  for i, probe in enumerate(probes):
    if probe["answer"] not in probe["candidates"]:
      raise ValueError(f"Probe {probe.get('id', i)}: answer {probe['answer']!r} not among "
                       f"candidates {probe['candidates']!r}.")
    prompt_ids = list(vocab.encode(probe["prompt"]))
    for cand in probe["candidates"]:
      rows.append((prompt_ids, list(vocab.encode(cand))))
      probe_index.append(i)
      is_answer.append(cand == probe["answer"])
  if encoder_decoder:
    batch = {**_lm_rows([c for _, c in rows], [0] * len(rows), pad_to),
             "encoder_input_tokens": _lm_rows([p for p, _ in rows], [0] * len(rows),
                                              pad_to)["decoder_target_tokens"]}
    batch["encoder_segment_ids"] = (batch["encoder_input_tokens"] > 0).astype(np.int32)
  else:
    batch = _lm_rows([p + c for p, c in rows], [len(p) for p, _ in rows], pad_to)
  return batch, np.asarray(probe_index), np.asarray(is_answer)


def _lm_rows(sequences, num_unscored, pad_to):
  """Decoder features for token lists, loss weights after the first `num_unscored` tokens."""
  length = -(-max(len(s) for s in sequences) // pad_to) * pad_to
  targets = np.zeros((len(sequences), length), np.int32)
  weights = np.zeros((len(sequences), length), np.float32)
  for r, (seq, skip) in enumerate(zip(sequences, num_unscored)):
    targets[r, :len(seq)] = seq
    weights[r, skip:len(seq)] = 1.0
  lengths_N1 = np.asarray([len(s) for s in sequences])[:, None]
  return {"decoder_target_tokens": targets,
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          "decoder_loss_weights": weights,
          "decoder_segment_ids": (np.arange(length) < lengths_N1).astype(np.int32),
          "decoder_positions": np.broadcast_to(np.arange(length, dtype=np.int32), targets.shape)}


def _chunks(batch: dict[str, np.ndarray], rows: int):
  """Splits a batch into `rows`-row pieces, zero-padding the last, so one compiled shape serves."""
  n = next(iter(batch.values())).shape[0]
  for start in range(0, n, rows):
    piece = {k: v[start:start + rows] for k, v in batch.items()}
    m = next(iter(piece.values())).shape[0]
    yield {k: np.pad(v, [(0, rows - m)] + [(0, 0)] * (v.ndim - 1)) for k, v in piece.items()}, m


class Evaluator:
  """Holds fixed validation batches and probes; `evaluate(params)` returns flat metrics."""

  def __init__(self, model: nn.Module, mesh, rules, data_config: pipeline.DataConfig,
               config: EvalConfig):
    self._mesh, self._rules = mesh, rules
    dp = partitioning.data_parallel_size(mesh)
    self._rows = -(-config.batch_size // dp) * dp
    self.domain_batches = {}
    self.probes = {}
    for task_name in _task_names(data_config.mixture_or_task_name):
      domain = lm_tasks.domain_of(task_name)
      task = seqio.get_mixture_or_task(task_name)
      if "validation" in task.splits:
        self.domain_batches[domain] = pipeline.eval_batches(
            data_config, task_name, config.batch_size, config.num_batches)
      if task_name in lm_tasks.TASK_PROBES:
        for name, probes in probe_sets(domain, lm_tasks.TASK_PROBES[task_name](),
                                       config.max_probes).items():
          self.probes[name] = probe_batch(
              probes, encoder_decoder=model.config.architecture == "encoder_decoder")

    def sums(params, batch):
      loss_BT, weights_BT = trainer.token_losses(model, params, batch)
      return (loss_BT * weights_BT).sum(axis=1), weights_BT.sum(axis=1)
    self._sums = jax.jit(sums)

  def _row_sums(self, params, batch):
    """Per-row (summed loss, summed weight) over a batch of any number of rows."""
    losses, weights = [], []
    for piece, n in _chunks(batch, self._rows):
      with self._mesh, nn.logical_axis_rules(self._rules):
        loss_N, weight_N = self._sums(params, trainer.global_batch(self._mesh, piece))
      losses.append(np.asarray(loss_N)[:n])
      weights.append(np.asarray(weight_N)[:n])
    return np.concatenate(losses), np.concatenate(weights)

  def evaluate(self, params) -> dict[str, float]:
    metrics = {}
    for domain, batches in self.domain_batches.items():
      loss_sum = weight_sum = 0.0
      for batch in batches:
        loss_N, weight_N = self._row_sums(params, batch)
        loss_sum, weight_sum = loss_sum + loss_N.sum(), weight_sum + weight_N.sum()
      metrics[f"eval/{domain}/loss"] = loss_sum / max(weight_sum, 1.0)
    for name, (batch, probe_index_N, is_answer_N) in self.probes.items():
      nll_N, num_tokens_N = self._row_sums(params, batch)
      metrics[f"probe/{name}/accuracy"] = probe_accuracy(
          nll_N / num_tokens_N, probe_index_N, is_answer_N)
    return metrics


def probe_accuracy(nll_N, probe_index_N, is_answer_N) -> float:
  """Fraction of probes whose right candidate scores the lowest NLL (ties count as wrong)."""
  correct = []
  for p in np.unique(probe_index_N):
    rows = probe_index_N == p
    nll, ans = nll_N[rows], is_answer_N[rows]
    best_wrong = nll[~ans].min() if (~ans).any() else np.inf
    correct.append(nll[ans].min() < best_wrong)
  return float(np.mean(correct))
