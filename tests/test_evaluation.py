"""Probe scoring: grouping by kind, accuracy with ties, batches that score only the answer."""

import numpy as np
import pytest

from mixjax import vocab as vocab_lib
from mixjax.eval import evaluator as evaluation


def _probe(kind, i):
  probe = {"prompt": f"p{i}", "answer": " a", "candidates": [" a", " b"]}
  return dict(probe, kind=kind) if kind else probe


def test_probe_sets_group_by_kind_and_cap_each_kind():
  probes = ([_probe("hard", i) for i in range(5)] + [_probe("easy", i) for i in range(3)]
            + [_probe(None, i) for i in range(2)])
  sets = evaluation.probe_sets("bios", probes, max_probes=4)
  assert {name: len(group) for name, group in sets.items()} == {
      "bios/hard": 4, "bios/easy": 3, "bios": 2}
  assert [p["prompt"] for p in sets["bios/hard"]] == ["p0", "p1", "p2", "p3"]
  assert evaluation.probe_sets("bios", probes, max_probes=0) == {}  # no empty groups to score


def test_probe_accuracy_counts_ties_as_wrong():
  probe_index_N = np.array([0, 0, 1, 1, 2, 2, 2])
  is_answer_N = np.array([True, False, True, False, False, True, False])
  nll_N = np.array([0.1, 0.5, 0.7, 0.7, 0.9, 0.2, 0.3])
  assert evaluation.probe_accuracy(nll_N, probe_index_N, is_answer_N) == pytest.approx(2 / 3)


def test_probe_batch_scores_only_the_candidate_tokens():
  vocab = vocab_lib.get_vocabulary()
  batch, probe_index_N, is_answer_N = evaluation.probe_batch(
      [{"prompt": "Q: 2 + 2 =", "answer": " 4", "candidates": [" 5", " 4"]}])
  assert probe_index_N.tolist() == [0, 0] and is_answer_N.tolist() == [False, True]
  prompt_len = len(vocab.encode("Q: 2 + 2 ="))
  assert batch["decoder_loss_weights"][1].sum() == len(vocab.encode(" 4"))
  assert batch["decoder_loss_weights"][1, :prompt_len].sum() == 0
  assert vocab.decode(batch["decoder_target_tokens"][1][batch["decoder_loss_weights"][1] > 0]
                      .tolist()) == " 4"
  with pytest.raises(ValueError, match="not among candidates"):
    evaluation.probe_batch([{"prompt": "x", "answer": " 1", "candidates": [" 2", " 3"]}])
