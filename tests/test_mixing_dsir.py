"""DSIR: vectorised hashing against a per-word reference, Gumbel top-k, selection on the testbed."""

import re

import numpy as np
import pytest

from mixjax.mixing import dsir
from mixjax.testbed import corpus
from mixjax.testbed import targets

def test_features_are_each_documents_words_and_bigrams_in_buckets():
  texts = ["The cat sat, on THE mat.", "", "x", "Zoë écrit 12+30 = 42\nnew line", "a b a b"]
  docs, buckets = dsir.hashed_features(texts, 997)
  words = [len(re.findall(r"[a-z0-9\x80-\uffff]+", t.lower())) for t in texts]
  assert np.bincount(docs, minlength=5).tolist() == [max(2 * w - 1, 0) for w in words]
  assert buckets.min() >= 0 and buckets.max() < 997
  # Case folds; a bigram never spans two documents; "a b a b" repeats "a", "b" and "a b".
  d1, b1 = dsir.hashed_features(["cat sat", "on"], 997)
  d2, b2 = dsir.hashed_features(["CAT Sat", "on"], 997)
  assert b1.tolist() == b2.tolist() and np.bincount(d1).tolist() == [3, 1]
  last = buckets[docs == 4]
  assert len(set(last.tolist())) <= 4 and len(last) == 7


def test_gumbel_top_k_samples_in_proportion_to_the_weights():
  log_w = np.log(np.asarray([1.0, 2.0, 7.0]))
  picks = np.bincount([dsir.gumbel_top_k(log_w, 1, seed)[0] for seed in range(3000)], minlength=3)
  np.testing.assert_allclose(picks / 3000, [0.1, 0.2, 0.7], atol=0.03)
  assert sorted(dsir.gumbel_top_k(log_w, 3, 0).tolist()) == [0, 1, 2]
  with pytest.raises(ValueError, match="0 < k"):
    dsir.gumbel_top_k(log_w, 4, 0)


def test_selection_moves_toward_the_target_domains_in_order():
  config = corpus.CorpusConfig(num_docs=1000)
  raw = [d for d in corpus.iter_documents(config, "train")]
  target = targets.documents(config, "bios3_math1", 120)
  index, log_w = dsir.select([d["text"] for d in raw], [d["text"] for d in target], 200,
                             dsir.DSIRConfig(num_buckets=4096))
  chosen = [raw[i]["domain"] for i in index]
  share = {d: chosen.count(d) / len(chosen) for d in corpus.DOMAINS}
  base = {d: sum(r["domain"] == d for r in raw) / len(raw) for d in corpus.DOMAINS}
  assert share["bios"] > share["math"] > max(share[d] for d in ("web", "code", "prose"))
  assert share["bios"] > base["bios"] and share["math"] > base["math"]
  assert share["web"] < base["web"]
  assert len(set(index.tolist())) == 200 and log_w.shape == (len(raw),)
