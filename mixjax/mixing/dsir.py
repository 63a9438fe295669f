"""DSIR (Xie et al., 2023): select raw documents that look like a target sample, by importance
resampling on hashed n-gram features.

Features: each document's words (lower-cased runs of letters and digits) and adjacent word pairs,
hashed into `num_buckets` buckets. Two bag-of-buckets models are fitted, one on the target sample
and one on the raw pool (add-`smoothing` counts). A document's log importance weight is the sum
over its features of log p_target(bucket) - log p_raw(bucket). Selection is Gumbel top-k on the
log weights: `k` documents drawn without replacement with probability proportional to the
weight, seeded.

Hashing is vectorised over whole batches of documents in numpy (no Python loop per word), with
the word and bigram hashes of `mixjax.iclm.embed` (one byte array per batch, a polynomial sum per
word by `np.add.reduceat`, bigrams mixed from neighbouring words of one document).
`register_dsir_task` registers the selection as a task (its `train` split: the chosen documents).
"""

import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np

from mixjax.data import tasks
from mixjax.iclm import embed



@dataclasses.dataclass(frozen=True)
class DSIRConfig:
  num_buckets: int = 10_000
  smoothing: float = 1.0      # add-one counts in both bag-of-buckets models
  batch_docs: int = 20_000    # documents hashed per numpy batch
  seed: int = 0               # the Gumbel noise of the selection


def hashed_features(texts: Sequence[str], num_buckets: int) -> tuple[np.ndarray, np.ndarray]:
  """Unigram and bigram buckets of a batch: (doc index `[F]`, bucket `[F]`) of every feature
  (the n-gram hashes ICLM's TF-IDF embedder uses, `mixjax.iclm.embed.ngram_features`)."""
  doc_F, hash_F = embed.ngram_features(texts)
  return doc_F, (hash_F % np.uint64(num_buckets)).astype(np.int64)


def _batches(texts: Sequence[str], size: int) -> Iterable[tuple[int, Sequence[str]]]:
  for start in range(0, len(texts), size):
    yield start, texts[start:start + size]


def bucket_counts(texts: Sequence[str], config: DSIRConfig) -> np.ndarray:
  """Feature counts `[B]` over all `texts`."""
  counts_B = np.zeros(config.num_buckets, np.int64)
  for _, batch in _batches(texts, config.batch_docs):
    _, buckets = hashed_features(batch, config.num_buckets)
    counts_B += np.bincount(buckets, minlength=config.num_buckets)
  return counts_B


def log_ratio(target_counts_B: np.ndarray, raw_counts_B: np.ndarray, smoothing: float
              ) -> np.ndarray:
  """log p_target(b) - log p_raw(b) `[B]` of the two smoothed bag-of-buckets models."""
  p_target = (target_counts_B + smoothing) / (target_counts_B.sum() + smoothing * len(
      target_counts_B))
  p_raw = (raw_counts_B + smoothing) / (raw_counts_B.sum() + smoothing * len(raw_counts_B))
  return np.log(p_target) - np.log(p_raw)


def log_importance_weights(texts: Sequence[str], log_ratio_B: np.ndarray,
                           config: DSIRConfig) -> np.ndarray:
  """Each document's log importance weight `[N]`: the sum of its features' log ratios."""
  out_N = np.zeros(len(texts))
  for start, batch in _batches(texts, config.batch_docs):
    docs, buckets = hashed_features(batch, config.num_buckets)
    out_N[start:start + len(batch)] = np.bincount(docs, weights=log_ratio_B[buckets],
                                                  minlength=len(batch))
  return out_N


def gumbel_top_k(log_weights_N: np.ndarray, k: int, seed: int) -> np.ndarray:
  """Indices of `k` documents sampled without replacement with probability ∝ exp(log weight)."""
  if not 0 < k <= len(log_weights_N):
    raise ValueError(f"DSIR selects k={k} documents from {len(log_weights_N)}; give 0 < k <= "
                     "the number of raw documents.")
  gumbel_N = np.random.default_rng(seed).gumbel(size=len(log_weights_N))
  keys_N = log_weights_N + gumbel_N
  top = np.argpartition(-keys_N, k - 1)[:k]
  return np.sort(top)


def select(raw_texts: Sequence[str], target_texts: Sequence[str], k: int,
           config: DSIRConfig = DSIRConfig()) -> tuple[np.ndarray, np.ndarray]:
  """DSIR: the indices of the `k` chosen raw documents and every raw document's log weight."""
  if not target_texts:
    raise ValueError("DSIR needs a non-empty target sample.")
  ratio_B = log_ratio(bucket_counts(target_texts, config), bucket_counts(raw_texts, config),
                      config.smoothing)
  log_w_N = log_importance_weights(raw_texts, ratio_B, config)
  return gumbel_top_k(log_w_N, k, config.seed), log_w_N


def register_dsir_task(name: str, raw_texts: Callable[[], Sequence[str]],
                       target_texts: Callable[[], Sequence[str]], k: int,
                       config: DSIRConfig = DSIRConfig(), domain: str = "") -> tasks.TaskSpec:
  """Registers task `name` whose `train` split is DSIR's `k` documents from `raw_texts()` for
  `target_texts()` (computed lazily, on first read, once)."""
  chosen = {}

  def train_texts():
    if "texts" not in chosen:
      raw = list(raw_texts())
      index, _ = select(raw, list(target_texts()), k, config)
      chosen["texts"] = [raw[i] for i in index]
    return chosen["texts"]
  return tasks.register(tasks.TaskSpec(name, tasks.texts_source({"train": train_texts}),
                                       domain=domain or name))
