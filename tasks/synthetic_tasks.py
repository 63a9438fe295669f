"""Tasks over the embedded synthetic corpus (the testbed), one per domain, and their mixture."""

import functools

import gin
import seqio

from mixjax.data import tasks
from mixjax.testbed import corpus
from mixjax.testbed import targets

PREFIX = "mixjax_synthetic"


def task_name(domain: str, prefix: str = PREFIX) -> str:
  return f"{prefix}_{domain}"


@functools.lru_cache(maxsize=None)
def _texts(config: corpus.CorpusConfig, split: str, domain: str) -> tuple[str, ...]:
  return tuple(doc["text"] for doc in corpus.iter_documents(config, split=split, domain=domain))


@functools.lru_cache(maxsize=None)
def _target_texts(config: corpus.CorpusConfig, name: str, num_docs: int) -> tuple[str, ...]:
  return tuple(doc["text"] for doc in targets.documents(config, name, num_docs))


def register_targets(config: corpus.CorpusConfig, prefix: str = PREFIX, num_docs: int = 200):
  """Registers `<prefix>_target_<name>`: each testbed target's held-out documents (validation
  split only; a `MIXING_TARGET` of known composition, not part of any mixture)."""
  for name in targets.names():
    source = tasks.texts_source(
        {"validation": functools.partial(_target_texts, config, name, num_docs)})
    tasks.register(tasks.TaskSpec(task_name(f"target_{name}", prefix), source,
                                  domain=f"target_{name}"))


@gin.configurable
def register_synthetic(num_docs: int = 20_000, seed: int = 0, prefix: str = PREFIX,
                       mixture_rates: dict | None = None) -> seqio.Mixture:
  """Registers `<prefix>_<domain>` tasks, `<prefix>_target_<name>` tasks (testbed targets of
  known composition, validation only) and the `<prefix>_mix` mixture.

  The corpus is generated lazily, on first read. Mixture rates default to each domain's share
  of documents; pass `mixture_rates={"math": 2.0, ...}` to override some of them.
  """
  config = corpus.CorpusConfig(num_docs=num_docs, seed=seed)
  for domain in corpus.DOMAINS:
    source = tasks.texts_source({
        split: functools.partial(_texts, config, split, domain)
        for split in ("train", "validation")})
    probes = (functools.partial(corpus.probes, config, domain)
              if domain in corpus.PROBE_DOMAINS else None)
    tasks.register(tasks.TaskSpec(task_name(domain, prefix), source, domain=domain,
                                  probes=probes))
  register_targets(config, prefix)
  rates = dict(corpus.domain_counts(config, split="train"))
  unknown = set(mixture_rates or {}) - set(rates)
  if unknown:
    raise ValueError(f"mixture_rates names unknown domains {sorted(unknown)}; valid: "
                     f"{list(corpus.DOMAINS)}.")
  rates.update(mixture_rates or {})
  return tasks.register_mixture(f"{prefix}_mix",
                                [(task_name(d, prefix), float(r)) for d, r in rates.items()])
