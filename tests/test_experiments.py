"""mixjax.experiments: paired summaries, markdown tables, branching an arm from a checkpoint."""

import json
import math
import os

import numpy as np
import pytest

from mixjax import vocab as vocab_lib
from mixjax.eval import context_probes
from mixjax.eval import evaluator
from mixjax.experiments import arms
from mixjax.experiments import context_loss
from mixjax.experiments import copy_probe
from mixjax.experiments import linked_docs
from mixjax.experiments import made_up
from mixjax.experiments import summary
from mixjax.experiments import tables
from mixjax.training import metrics as metrics_lib
from tests import helpers

# Two seeds, a baseline and one arm: the arm is +2 then +0 on `m`, so the paired difference is
# 1 ± sqrt(2), while the arms' own spreads are about the seed-to-seed shift.
_PER_SEED = {0: {"base": {"m": 1.0, "n": 10.0}, "up": {"m": 3.0, "n": 10.0}},
             1: {"base": {"m": 2.0, "n": 20.0}, "up": {"m": 2.0, "n": 21.0}}}


def test_summary_has_every_figure_and_paired_differences():
  flat = summary.summarise(_PER_SEED, "base")
  assert flat["seed0/up/m"] == 3.0 and flat["seed1/base/n"] == 20.0
  assert flat["mean/base/m"] == 1.5 and math.isclose(flat["std/base/m"], math.sqrt(0.5))
  assert flat["mean/up/m"] == 2.5 and math.isclose(flat["std/up/m"], math.sqrt(0.5))
  assert flat["mean/up-base/m"] == 1.0 and math.isclose(flat["std/up-base/m"], math.sqrt(2))
  assert flat["mean/up-base/n"] == 0.5 and math.isclose(flat["std/up-base/n"], math.sqrt(0.5))
  assert "mean/base-base/m" not in flat


def test_summary_baseline_may_come_last_and_one_seed_has_zero_std():
  flat = summary.summarise({3: {"iclm": {"m": 0.25}, "random": {"m": 1.0}}}, "random")
  assert flat["mean/iclm-random/m"] == -0.75 and flat["std/iclm-random/m"] == 0.0
  assert flat["std/random/m"] == 0.0 and flat["seed3/iclm/m"] == 0.25


def test_summary_names_a_missing_baseline():
  with pytest.raises(ValueError, match="'control' is not among the arms"):
    summary.summarise(_PER_SEED, "control")


def test_summary_json_round_trips(tmp_path):
  path = tmp_path / "out" / "results.json"
  flat = summary.summarise(_PER_SEED, "base")
  summary.write_json(flat, str(path))
  assert json.loads(path.read_text()) == flat


def test_table_rows_columns_and_cells():
  flat = summary.summarise(_PER_SEED, "base")
  assert tables.metric_rows(flat, "base") == ["m", "n"]
  assert tables.metric_rows(flat, "base", include=("n",)) == ["n"]
  assert tables.metric_rows(flat, "base", exclude=("n",)) == ["m"]
  assert tables.markdown(flat, ["base", "up", "up-base"], ["m"], [0, 1]) == (
      "| metric (2 seeds: 0, 1) | base | up | up-base |\n"
      "| --- | --- | --- | --- |\n"
      "| m | 1.500 ± 0.707 | 2.500 ± 0.707 | 1.000 ± 1.414 |")


def test_with_mean_loss_averages_domains_only():
  out = arms.with_mean_loss({"eval/a/loss": 1.0, "eval/b/loss": 2.0, "probe/a/accuracy": 0.5})
  assert out["eval/mean/loss"] == 1.5 and out["probe/a/accuracy"] == 0.5


def _losses(model_dir) -> dict[int, float]:
  return {m["step"]: m["loss"] for m in metrics_lib.read_metrics(model_dir) if "loss" in m}


def test_a_branched_arm_continues_from_the_trunks_checkpoint(tmp_path):
  task = helpers.register_word_task(tmp_path, name="experiments_words")
  trunk, arm = tmp_path / "trunk", tmp_path / "arm"
  arms.train_configs(**helpers.tiny_train_kwargs(trunk, task, steps=6, checkpoint_period=3))
  arms.branch(str(trunk), str(arm), 3)
  assert sorted(os.listdir(arm / "checkpoints")) == ["3"]
  assert max(m["step"] for m in metrics_lib.read_metrics(str(arm))) == 3
  arms.run_arm(str(arm), 6, lambda: arms.train_configs(
      **helpers.tiny_train_kwargs(arm, task, steps=6, checkpoint_period=3)))
  trunk_losses, arm_losses = _losses(str(trunk)), _losses(str(arm))
  assert sorted(arm_losses) == list(range(1, 7))
  # Same config after the branch: the arm's steps 4-6 are the trunk's, batch for batch.
  np.testing.assert_allclose([arm_losses[s] for s in (4, 5, 6)],
                             [trunk_losses[s] for s in (4, 5, 6)], rtol=1e-6)
  assert arms.has_checkpoint(str(arm), 6)
  assert arms.final_eval(str(arm))["eval/mean/loss"] == arms.final_eval(str(arm))[
      "eval/experiments_words/loss"]
  with pytest.raises(FileNotFoundError, match="No checkpoint at step 4"):
    arms.branch(str(trunk), str(tmp_path / "other"), 4)


def test_extra_probes_keep_their_context_documents():
  probe = {"kind": "same_person", "documents": ["Ana Bell works at Acme."],
           "prompt": "Ana Bell works at", "answer": " Acme", "candidates": [" Acme", " Beta"]}
  ours, theirs = evaluator.probe_batch([probe]), context_probes.probe_batch([probe])
  assert all(np.array_equal(ours[0][k], theirs[0][k]) for k in theirs[0])
  assert np.array_equal(ours[1], theirs[1]) and np.array_equal(ours[2], theirs[2])


def test_related_pairs_put_each_record_after_a_related_and_an_unrelated_one():
  records = [{"person": "a", "related_people": ["b"], "text": "A"},
             {"person": "b", "related_people": ["a", "c"], "text": "B"},
             {"person": "c", "related_people": ["b"], "text": "C"},
             {"person": "d", "related_people": [], "text": "D"},
             {"person": "e", "related_people": ["f"], "text": "E"}]  # f has no record
  pairs = context_loss.related_pairs(records, seed=3)
  assert [p.second for p in pairs] == ["A", "B", "C"]
  related_of = {"A": {"B"}, "B": {"A", "C"}, "C": {"B"}}
  unrelated_of = {"A": {"D", "E"}, "B": {"D", "E"}, "C": {"D", "E"}}  # nobody related to either
  for p in pairs:
    assert p.related in related_of[p.second] and p.unrelated in unrelated_of[p.second]
  assert pairs == context_loss.related_pairs(records, seed=3)  # seeded
  assert len(context_loss.related_pairs(records, max_pairs=2)) == 2


class _CopyOracle:
  """A scorer that copies perfectly: a token costs 0 once its 4-gram has occurred earlier in
  the row, else 1."""
  layout = "lm"

  def __init__(self, vocabulary):
    self.vocabulary = vocabulary

  def target_losses(self, rows):
    out = []
    for row in rows:
      seen, loss = set(), []
      for p in range(len(row)):
        gram = tuple(row[max(p - 3, 0):p + 1])
        loss.append(0.0 if gram in seen else 1.0)
        seen.add(gram)
      out.append(np.asarray(loss))
    return out


def test_copy_probe_scores_a_perfect_copier_at_zero_on_the_repeat():
  strings = made_up.random_strings(16, seed=5)
  assert strings == made_up.random_strings(16, seed=5) and len(set(strings)) == 16
  figures = copy_probe.copy_metrics(_CopyOracle(vocab_lib.get_vocabulary()), strings)
  for name in copy_probe.FORMATS:
    assert figures[f"copy/{name}/repeat"] == 0.0 and figures[f"copy/{name}/first"] > 0.9
    assert figures[f"copy/{name}/gain"] == figures[f"copy/{name}/first"]


def test_linked_records_share_made_up_names_within_a_pair_only():
  records = linked_docs.linked_records(30, seed=0)
  assert records == linked_docs.linked_records(30, seed=0)
  assert records != linked_docs.linked_records(30, seed=0, split="validation")
  pairs = context_loss.related_pairs(records, seed=0)
  assert len(pairs) == 60
  for pair in pairs:
    shared = set(pair.related.split()) & set(pair.second.split())
    strangers = set(pair.unrelated.split()) & set(pair.second.split())
    # The made-up words (capitalised) a pair shares; a stranger shares only template words.
    assert sum(w[0].isupper() for w in shared) >= 4
    assert not any(w[0].isupper() for w in strangers)
