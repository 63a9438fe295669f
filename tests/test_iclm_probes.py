"""Tests for the cross-document probes: what each kind puts in context and among the candidates
(`mixjax.iclm.probes`), and the token layout (documents, EOS, statement, candidate) in one segment
(`mixjax.eval.context_probes`)."""

import re

import numpy as np
import pytest

from mixjax import vocab as vocab_lib
from mixjax.eval import context_probes
from mixjax.eval import evaluator
# `iclm_probes`, not `probes`: the fixture below holds the probes themselves.
from mixjax.iclm import probes as iclm_probes
from mixjax.testbed import corpus as synthetic


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  out = tmp_path_factory.mktemp("corpus")
  synthetic.write_corpus(out, synthetic.CorpusConfig(num_docs=3000, seed=0))
  return str(out)


@pytest.fixture(scope="module")
def probes(corpus) -> dict[str, list[dict]]:
  return iclm_probes.probes_from_corpus(corpus, max_per_kind=25, seed=0)


def _mentioned(text: str, candidate: str) -> bool:
  return re.search(rf"(?<!\w){re.escape(candidate.strip())}(?!\w)", text) is not None


def _name(probe: dict) -> str:
  return probe["prompt"].rsplit(" ", 2)[0]  # "<name> works at" / "<name> lives in"


def test_every_kind_is_built_with_four_distinct_spaced_candidates(probes):
  assert set(probes) == set(iclm_probes.KINDS)
  for kind, items in probes.items():
    # 30 held-out bios: same_person and colleague reach the cap; unrelated skips a few bios.
    assert len(items) == 25 if "unrelated" not in kind else 15 <= len(items) <= 25, kind
    for p in items:
      assert p["kind"] == kind and p["answer"] in p["candidates"]
      assert len(set(p["candidates"])) == 4 and all(c.startswith(" ") for c in p["candidates"])
      assert p["prompt"] == iclm_probes.STATEMENTS[p["attribute"]].format(name=_name(p))


def test_in_context_answers_are_the_only_candidate_the_bio_mentions(corpus, probes):
  _, validation = iclm_probes.load_bios(corpus)
  name_of_bio = {r["text"]: r["name"] for r in validation}
  for kind in ("same_person", "colleague"):
    for p in probes[kind]:
      (bio,) = p["documents"]
      assert [c for c in p["candidates"] if _mentioned(bio, c)] == [p["answer"]]
      # same_person asks about the bio's person; colleague about someone the bio names.
      assert (_name(p) == name_of_bio[bio]) == (kind == "same_person")
      assert _name(p) in bio


def test_unrelated_context_states_a_lure_and_not_the_answer(corpus, probes):
  _, validation = iclm_probes.load_bios(corpus)
  people = {r["text"]: r for r in validation}
  for p in probes["unrelated"]:
    (bio,) = p["documents"]
    assert _name(p) not in bio
    lures = [c for c in p["candidates"] if _mentioned(bio, c)]
    assert lures == [" " + people[bio][p["attribute"]]] and p["answer"] not in lures


def test_closed_book_probes_are_the_in_context_ones_without_the_bio(probes):
  for kind in ("same_person", "colleague"):
    closed = probes[f"{kind}_closed_book"]
    assert [p["documents"] for p in closed] == [[]] * len(closed)
    for a, b in zip(closed, probes[kind]):
      assert {**a, "kind": kind, "documents": b["documents"]} == b


def test_probes_are_seeded(corpus, probes):
  assert iclm_probes.probes_from_corpus(corpus, max_per_kind=25, seed=0) == probes
  assert iclm_probes.probes_from_corpus(corpus, max_per_kind=25, seed=1) != probes


def test_batch_joins_documents_with_eos_in_one_segment(probes):
  vocab = vocab_lib.get_vocabulary()
  probe = probes["colleague"][0]
  batch, probe_index_N, is_answer_N = context_probes.probe_batch([probe])
  assert probe_index_N.tolist() == [0] * 4 and is_answer_N.sum() == 1
  for row, candidate in enumerate(probe["candidates"]):
    expected = [*vocab.encode(probe["documents"][0]), vocab.eos_id, *vocab.encode(probe["prompt"]),
                *vocab.encode(candidate)]
    tokens = batch["decoder_target_tokens"][row]
    assert tokens[:len(expected)].tolist() == expected and not tokens[len(expected):].any()
    assert batch["decoder_input_tokens"][row, 1:len(expected) + 1].tolist() == expected
    scored = np.flatnonzero(batch["decoder_loss_weights"][row])
    assert scored.tolist() == list(range(len(expected) - len(vocab.encode(candidate)),
                                         len(expected)))
    assert set(batch["decoder_segment_ids"][row, :len(expected)]) == {1}


def test_batch_without_documents_is_the_text_probe_batch(probes):
  closed = probes["same_person_closed_book"][:5]
  ours, theirs = context_probes.probe_batch(closed), evaluator.probe_batch(closed)
  assert all(np.array_equal(ours[0][k], theirs[0][k]) for k in theirs[0])
  assert np.array_equal(ours[1], theirs[1]) and np.array_equal(ours[2], theirs[2])


def test_a_nul_in_a_bio_is_refused():
  record = {"id": "b0", "person": "p0", "name": "Ana Bell", "related_people": [],
            "city": "Lima", "employer": "Acme Labs", "text": "Ana Bell works at Acme Labs.\x00"}
  people = iclm_probes.people_table([record])
  with pytest.raises(ValueError, match="b0 holds a NUL"):
    iclm_probes.build_probes([record], people, max_per_kind=1)
  probe = {"kind": "same_person", "documents": [record["text"]], "prompt": "Ana Bell works at",
           "answer": " Acme Labs", "candidates": [" Acme Labs", " Beta Works"]}
  with pytest.raises(ValueError, match=r"Probe 0 \(same_person\) holds a NUL"):
    context_probes.probe_batch([probe])
