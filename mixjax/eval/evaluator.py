"""Per-domain evaluation: validation loss of each task in the mixture, and probe accuracy.

A probe is a prompt with candidate answers (one right). The model scores each candidate by the
mean negative log-likelihood per token of its tokens after the prompt (per-token, so that short
candidates are not favoured); the probe is answered correctly when the right candidate scores
best. Chance is 1 / number of candidates. Probes may carry a `kind` (bios `closed_book` and
`in_context`, ...); each kind is reported on its own as `probe/<domain>/<kind>/accuracy`.
"""

import dataclasses
import functools
from typing import Mapping, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mixjax.data import pipeline
from mixjax.data import tasks
from mixjax.training import partitioning
from mixjax.training import trainer


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  period: int = 100            # evaluate every N steps (and at the end); 0 = only at the end
  num_batches: int = 4         # validation batches per domain
  batch_size: int = 32         # sequences per eval batch (rounded up to the data parallelism)
  max_probes: int = 100        # per domain and probe kind


def probe_sets(domain: str, probes, max_probes: int) -> dict[str, list[dict]]:
  """Probes grouped under their metric name: `<domain>/<kind>`, or `<domain>` when kindless.

  Keeps the first `max_probes` of each group, so that a domain's easy and hard kinds are
  reported side by side instead of one crowding out the other.
  """
  sets = {}
  for probe in probes if max_probes > 0 else ():
    name = f"{domain}/{probe['kind']}" if probe.get("kind") else domain
    group = sets.setdefault(name, [])
    if len(group) < max_probes:
      group.append(probe)
  return sets


def probe_batch(probes, pad_to: int = 32, data: pipeline.DataConfig | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Token arrays for every (probe, candidate) pair, in the run's prompt format.

  The objective formats the prompt (`lm`: a causal prefix of the row; `ul2`: the [S2S] mode
  token, the prompt and EOS as inputs, bidirectional in a prefix-LM row or the encoder's input);
  loss weights fall on the candidate's tokens only. `data` is the run's config (default: a
  byte-vocabulary `lm` run). A probe's optional `documents` come first in its prompt, each
  followed by EOS. Returns (batch `[N, L]` features, probe_index_N, is_answer_N).
  """
  data = data or _LM_BYTES
  vocabulary = data.vocabulary
  prompts, candidates, probe_index, is_answer = [], [], [], []
  for i, probe in enumerate(probes):
    if probe["answer"] not in probe["candidates"]:
      raise ValueError(f"Probe {probe.get('id', i)}: answer {probe['answer']!r} not among "
                       f"candidates {probe['candidates']!r}.")
    # Context documents (the ICLM cross-document probes) precede the prompt, each closed by EOS
    # as in a training context; text alone cannot hold EOS.
    prompt_ids = [t for doc in probe.get("documents", ())
                  for t in (*vocabulary.encode(doc), vocabulary.eos_id)]
    prompt_ids += list(vocabulary.encode(probe["prompt"]))
    for cand in probe["candidates"]:
      prompts.append(prompt_ids)
      candidates.append(list(vocabulary.encode(cand)))
      probe_index.append(i)
      is_answer.append(cand == probe["answer"])
  batch = pipeline.prompt_rows(data, prompts, candidates, pad_to)
  return batch, np.asarray(probe_index), np.asarray(is_answer)


_LM_BYTES = pipeline.DataConfig("", {"targets": 0}, 0)


def _chunks(batch: dict[str, np.ndarray], rows: int):
  """Splits a batch into `rows`-row pieces, zero-padding the last, so one compiled shape serves."""
  n = next(iter(batch.values())).shape[0]
  for start in range(0, n, rows):
    piece = {k: v[start:start + rows] for k, v in batch.items()}
    m = next(iter(piece.values())).shape[0]
    yield {k: np.pad(v, [(0, rows - m)] + [(0, 0)] * (v.ndim - 1)) for k, v in piece.items()}, m


class Evaluator:
  """Holds fixed validation batches and probes; `evaluate(params)` returns flat metrics.

  Each host reads only its rows of the validation batches (`pipeline.host_eval_batches`); the
  metrics, sums over all rows, are the same on every host.

  Probes come from each task's spec and from `extra_probes` (`{metric name: probes}`, e.g. the
  ICLM experiment's cross-document probes); all are scored in the run's prompt format.
  """

  def __init__(self, model: nn.Module, mesh, rules, data_config: pipeline.DataConfig,
               config: EvalConfig, extra_probes: Mapping[str, Sequence[dict]] | None = None):
    self._mesh, self._rules = mesh, rules
    dp = partitioning.data_parallel_size(mesh)
    self._rows = -(-config.batch_size // dp) * dp
    self._host_rows = partitioning.host_rows(mesh, self._rows)
    self.domain_batches = {}  # this host's rows of each eval batch
    self.probes = {}
    for task_name in sorted(tasks.task_names(data_config.mixture_or_task_name)):
      spec = tasks.get(task_name)
      if "validation" in spec.splits and config.num_batches > 0:
        self.domain_batches[spec.domain] = pipeline.host_eval_batches(
            data_config, task_name, self._rows, config.num_batches, self._host_rows)
      if spec.probes is not None:
        for name, probes in probe_sets(spec.domain, spec.probes(), config.max_probes).items():
          self.probes[name] = probe_batch(probes, data=data_config)
    for name, probes in (extra_probes or {}).items():
      if probes[:config.max_probes]:
        self.probes[name] = probe_batch(probes[:config.max_probes], data=data_config)

    self._sums = jit_row_sums(model, mesh)

  def _global_row_sums(self, params, host_batch):
    """Per-row (summed loss, summed weight) of all rows of one eval batch, from this host's."""
    with partitioning.mesh_context(self._mesh, self._rules):  # Pallas kernels in shard_map
      loss_N, weight_N = self._sums(params, trainer.global_batch(self._mesh, host_batch))
    return np.asarray(loss_N), np.asarray(weight_N)

  def _row_sums(self, params, batch):
    """Per-row (summed loss, summed weight) over a global batch of any number of rows."""
    losses, weights = [], []
    for piece, n in _chunks(batch, self._rows):
      local = {k: v[self._host_rows] for k, v in piece.items()}  # this host's devices' rows
      loss_N, weight_N = self._global_row_sums(params, local)
      losses.append(loss_N[:n])
      weights.append(weight_N[:n])
    return np.concatenate(losses), np.concatenate(weights)

  def evaluate(self, params) -> dict[str, float]:
    metrics = {}
    for domain, batches in self.domain_batches.items():
      loss_sum = weight_sum = 0.0
      for host_batch in batches:
        loss_N, weight_N = self._global_row_sums(params, host_batch)
        loss_sum, weight_sum = loss_sum + loss_N.sum(), weight_sum + weight_N.sum()
      metrics[f"eval/{domain}/loss"] = loss_sum / max(weight_sum, 1.0)
    for name, (batch, probe_index_N, is_answer_N) in self.probes.items():
      nll_N, num_tokens_N = self._row_sums(params, batch)
      metrics[f"probe/{name}/accuracy"] = probe_accuracy(
          nll_N / num_tokens_N, probe_index_N, is_answer_N)
    return metrics


def row_loss_sums(params, batch, *, model: nn.Module):
  """Per-row summed loss and summed loss weight `[B]`, `[B]`: the eval step."""
  loss_BT, weights_BT = trainer.token_losses(model, params, batch)
  return (loss_BT * weights_BT).sum(axis=1), weights_BT.sum(axis=1)


def jit_row_sums(model: nn.Module, mesh):
  """The jitted eval step (evaluation, and the dry run's `--dry_run_step=eval`). Its outputs are
  replicated: every host can read all rows' sums (metrics are the same on each)."""
  return jax.jit(functools.partial(row_loss_sums, model=model),
                 out_shardings=NamedSharding(mesh, P()))


def probe_accuracy(nll_N, probe_index_N, is_answer_N) -> float:
  """Fraction of probes whose right candidate scores the lowest NLL (ties count as wrong)."""
  correct = []
  for p in np.unique(probe_index_N):
    rows = probe_index_N == p
    nll, ans = nll_N[rows], is_answer_N[rows]
    best_wrong = nll[~ans].min() if (~ans).any() else np.inf
    correct.append(nll[ans].min() < best_wrong)
  return float(np.mean(correct))
