"""Tests for the embedded synthetic corpus: determinism, splits, held-out probes, links, CLI."""

import contextlib
import hashlib
import io
import itertools
import json
import re

import pytest

from mixjax.testbed import bios
from mixjax.testbed import code
from mixjax.testbed import corpus as synthetic
from mixjax.testbed import prose
from mixjax.testbed import world as world_lib

CONFIG = synthetic.CorpusConfig(num_docs=1500, seed=3, num_probes=120)
# sha256 prefix of a small corpus (see test_golden_digest); the same on Python 3.10-3.13.
GOLDEN_DIGEST = "80d0536abb1b83ec"


@pytest.fixture(scope="module")
def train():
  return list(synthetic.iter_documents(CONFIG, "train"))


@pytest.fixture(scope="module")
def validation():
  return list(synthetic.iter_documents(CONFIG, "validation"))


def _by_domain(records, domain):
  return [r for r in records if r["domain"] == domain]


def _haystack(records):
  """All texts in one string, NUL-separated so no match spans two documents."""
  return "\0".join(r["text"] for r in records)


def _run_program(program: str) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(program, {})  # noqa: S102  (our own generated programs)
  return out.getvalue().strip()


# ----------------------------------------------------------------------------------------------
# Determinism and counts.


def test_same_config_gives_same_documents_in_any_order(train):
  world_lib._world.cache_clear()  # rebuild the world too
  again = [synthetic.document(CONFIG, "train", r["domain"], int(r["id"].rsplit("-", 1)[1]))
           for r in reversed(train)]
  assert again[::-1] == train


def test_other_seed_gives_other_documents(train):
  other = synthetic.CorpusConfig(num_docs=1500, seed=4, num_probes=120)
  for domain in synthetic.DOMAINS:
    texts = {r["text"] for r in _by_domain(train, domain)}
    other_texts = {r["text"] for r in synthetic.iter_documents(other, "train", domain)}
    assert len(texts & other_texts) < 0.01 * len(texts), domain
  assert synthetic.probes(other, "math") != synthetic.probes(CONFIG, "math")


def test_golden_digest():
  # The corpus must not drift across Python/numpy versions or machines; update this digest only
  # when a change to the generator is intended.
  config = synthetic.CorpusConfig(num_docs=200, seed=0, num_probes=10)
  docs = list(synthetic.iter_documents(config, "train"))
  docs += [p for d in synthetic.PROBE_DOMAINS for p in synthetic.probes(config, d)]
  digest = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()
  assert digest[:16] == GOLDEN_DIGEST



def test_counts_match_iteration(train, validation):
  train_counts = synthetic.domain_counts(CONFIG, "train")
  assert sum(train_counts.values()) == CONFIG.num_docs
  assert train_counts == {"web": 600, "bios": 300, "math": 225, "code": 225, "prose": 150}
  val_counts = synthetic.domain_counts(CONFIG, "validation")
  assert val_counts == {"web": 30, "bios": 15, "math": 11, "code": 11, "prose": 8}
  for records, counts in ((train, train_counts), (validation, val_counts)):
    assert {d: len(_by_domain(records, d)) for d in synthetic.DOMAINS} == counts


def test_zero_weight_domain_has_no_documents_but_keeps_probes():
  config = synthetic.CorpusConfig(num_docs=50, domain_weights={"math": 1.0, "web": 0.0},
                                  num_probes=5)
  assert synthetic.domain_counts(config) == {"web": 0, "bios": 0, "math": 50, "code": 0,
                                             "prose": 0}
  assert list(synthetic.iter_documents(config, "train", "web")) == []
  assert len(synthetic.probes(config, "math")) == 5 * len(synthetic.PROBE_KINDS["math"])


def test_ids_unique_and_fields_present(train, validation):
  records = train + validation
  assert len({r["id"] for r in records}) == len(records)
  for r in records:
    assert r["id"].startswith(f"{r['domain']}-")
    assert set(r) >= {"id", "domain", "text"}
  for r in _by_domain(records, "bios"):
    assert set(r) >= {"person", "name", "related_people", "city", "employer"}


def test_texts_are_short_ascii(train, validation):
  for r in train + validation:
    assert r["text"].isascii(), r["id"]
    assert 80 <= len(r["text"]) <= 650, (r["id"], len(r["text"]))


def test_train_and_validation_texts_are_disjoint(train, validation):
  train_texts = {r["text"] for r in train}
  assert not [r["id"] for r in validation if r["text"] in train_texts]


# ----------------------------------------------------------------------------------------------
# Probes.


PROBE_KINDS = [(d, k) for d in synthetic.PROBE_DOMAINS for k in synthetic.PROBE_KINDS[d]]
# Kinds whose prompts are held out of train text (the agreement kind is a rule on few nouns).
HELD_OUT_KINDS = [(d, k) for d, k in PROBE_KINDS if k != "agreement"]


@pytest.mark.parametrize("domain,kind", PROBE_KINDS)
def test_probe_format(domain, kind):
  probes = synthetic.probes(CONFIG, domain, kind)
  assert len(probes) == CONFIG.num_probes
  assert len({p["id"] for p in probes}) == len(probes)
  assert len({p["prompt"] for p in probes}) == len(probes)
  assert len({len(p["candidates"]) for p in probes}) == 1
  for p in probes:
    assert (p["domain"], p["kind"]) == (domain, kind)
    assert p["answer"] in p["candidates"]
    assert len(set(p["candidates"])) == len(p["candidates"]) >= 2
    assert all(c.startswith(" ") for c in p["candidates"])
  # The answer's position varies, so always guessing the first candidate is chance.
  assert len({p["candidates"].index(p["answer"]) for p in probes}) > 1


def test_web_has_no_probes():
  assert synthetic.probes(CONFIG, "web") == []
  assert "web" not in synthetic.PROBE_DOMAINS


def test_all_kinds_by_default_and_unknown_kind_is_named():
  everything = synthetic.probes(CONFIG, "prose")
  assert everything == (synthetic.probes(CONFIG, "prose", "attractor")
                        + synthetic.probes(CONFIG, "prose", "agreement"))
  with pytest.raises(ValueError, match="agreement"):
    synthetic.probes(CONFIG, "prose", "closed_book")


@pytest.mark.parametrize("domain,kind", HELD_OUT_KINDS)
def test_probe_prompts_never_occur_in_training(train, domain, kind):
  haystack = _haystack(train)
  leaked = [p["prompt"] for p in synthetic.probes(CONFIG, domain, kind)
            if p["prompt"] in haystack]
  assert not leaked


def test_agreement_probe_verb_follows_the_adjacent_subject():
  plurals = {plural for _, plural in prose._NOUNS}
  for p in synthetic.probes(CONFIG, "prose", "agreement"):
    assert p["answer"].endswith("s") != (p["prompt"].split()[-1] in plurals), p


def test_math_probe_problems_are_held_out_in_every_format(train):
  haystack = _haystack(train)
  for p in synthetic.probes(CONFIG, "math", "arithmetic"):
    a, op, b = p["prompt"].removeprefix("Q: ").removesuffix(" =").split()
    assert int(p["answer"]) == {"+": int(a) + int(b), "-": int(a) - int(b),
                                "*": int(a) * int(b)}[op]
    assert not re.search(rf"(?<!\d){a} \{op} {b} = ", haystack), p["prompt"]


def test_code_outputs_are_what_python_prints(train):
  for r in _by_domain(train, "code")[:60]:
    for snippet in r["text"].split("\n\n"):
      program, _, output = snippet.rpartition("\n# output: ")
      assert _run_program(program) == output, snippet
  for p in synthetic.probes(CONFIG, "code", "output"):
    assert _run_program(p["prompt"].removesuffix("\n# output:")) == p["answer"].strip()


def test_prose_probe_answer_agrees_with_subject_not_attractor():
  plurals = {plural for _, plural in prose._NOUNS}
  for p in synthetic.probes(CONFIG, "prose", "attractor"):
    words = p["prompt"].split()
    subject_plural, attractor_plural = words[1] in plurals, words[-1] in plurals
    assert subject_plural != attractor_plural, p["prompt"]
    assert p["answer"].endswith("s") != subject_plural, p


def _is_card(record):
  return record["format"] == "qa_card"


def test_bios_probes_ask_known_facts_in_an_unseen_form(train):
  bios = _by_domain(train, "bios")
  for p in synthetic.probes(CONFIG, "bios", "closed_book"):
    name = re.search(r"(?:of|was|did|does) ([A-Z]\w+ [A-Z]\w+)", p["prompt"]).group(1)
    about = [r for r in bios if r["name"] == name]
    assert about, f"{name} has no train bio"
    assert not any(_is_card(r) or "Q: " in r["text"] for r in about), f"{name} has QA in train"
    assert any(p["answer"].strip() in r["text"] for r in about), p


def test_in_context_bios_probes_are_answered_by_their_card_alone(train):
  carded = {r["name"] for r in _by_domain(train, "bios") if _is_card(r)}
  for p in synthetic.probes(CONFIG, "bios", "in_context"):
    card, question = p["prompt"].rsplit("\nQ: ", 1)
    assert question.endswith("\nA:") and card.count(". ") == 1, p["prompt"]
    assert p["answer"].strip() in card
    assert not [c for c in p["candidates"] if c != p["answer"] and c.strip() in card], p
    name = re.search(r"(?:of|was|did|does) ([A-Z]\w+ [A-Z]\w+)", question).group(1)
    assert name in card.split(". ")[0], p["prompt"]
    assert name not in carded, f"{name} has a QA card in train"


def test_relation_probes_ask_new_people_and_only_the_type_decides(train):
  known = {r["name"] for r in _by_domain(train, "bios")}
  world = world_lib.config_world(CONFIG)
  pools = {a: set(bios._answer_pool(world, a)) for a in bios._RELATIONS}
  for p in synthetic.probes(CONFIG, "bios", "relation"):
    name = " ".join(p["prompt"].split()[:2])
    assert name not in known
    kinds = [[a for a, pool in pools.items() if c.strip() in pool] for c in p["candidates"]]
    assert all(len(k) == 1 for k in kinds), p  # every candidate is a value of one attribute
    assert len({k[0] for k in kinds}) == 4, p  # ... and of four different ones
    answer_kind = kinds[p["candidates"].index(p["answer"])][0]
    assert any(t.format(name=name, birth_city="").startswith(p["prompt"].split(" in ")[0])
               for t in bios._RELATIONS[answer_kind]), p


def test_magnitude_probes_differ_from_the_answer_only_in_digit_count():
  for p in synthetic.probes(CONFIG, "math", "magnitude"):
    a, op, b = p["prompt"].removeprefix("Q: ").removesuffix(" =").split()
    value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    assert p["answer"] == f" {value}\n"
    digits = [c.strip() for c in p["candidates"]]
    assert len({len(x) for x in digits}) == 4
    assert all(x.startswith(str(value)) or str(value).startswith(x) for x in digits)


def test_qa_cards_in_train_answer_their_first_question(train):
  cards = [r for r in _by_domain(train, "bios") if _is_card(r)]
  assert len(cards) > 10
  for r in cards:
    facts, *qa = r["text"].split("\n")
    assert len(qa) == 4 and qa[0].startswith("Q: ") and qa[1].startswith("A: ")
    assert qa[1].removeprefix("A: ") in facts, r["text"]
    assert r["name"] in facts
  lengths = sorted(len(r["text"]) for r in cards)
  assert lengths[len(lengths) // 2] < 256  # most cards fit one quickstart row with their answers


def test_too_few_people_for_probes_warns(caplog):
  config = synthetic.CorpusConfig(num_docs=100, num_probes=200)
  probes = synthetic.probes(config, "bios", "closed_book")
  assert 0 < len(probes) < 200
  assert "raise num_docs" in caplog.text


# ----------------------------------------------------------------------------------------------
# bios links.


def test_related_bios_name_each_other_and_share_employer_and_city(train):
  bios = _by_domain(train, "bios")
  people = {r["person"]: r for r in bios}
  assert len(people) >= 90
  for r in bios:
    assert 1 <= len(r["related_people"]) <= 4
    assert _is_card(r) or r["employer"] in r["text"]
    for other in r["related_people"]:
      if other not in people:
        continue  # not every person has a bio in so small a corpus
      peer = people[other]
      assert r["person"] in peer["related_people"]
      assert (peer["employer"], peer["city"]) == (r["employer"], r["city"])
      if not _is_card(r):
        assert peer["name"] in r["text"], (r["text"], peer["name"])


def test_related_bios_share_more_words_than_random_pairs(train):
  bios = [r for r in _by_domain(train, "bios") if not _is_card(r)]
  words = {r["id"]: set(r["text"].split()) for r in bios}
  by_person = {}
  for r in bios:
    by_person.setdefault(r["person"], []).append(r)

  def jaccard(a, b):
    return len(words[a["id"]] & words[b["id"]]) / len(words[a["id"]] | words[b["id"]])

  related = [jaccard(r, peer) for r in bios for other in r["related_people"]
             for peer in by_person.get(other, [])[:1]]
  unrelated = [jaccard(a, b) for a, b in zip(bios, bios[7:]) if a["employer"] != b["employer"]]
  assert sum(related) / len(related) > 1.5 * sum(unrelated) / len(unrelated)


def test_people_have_several_bios_and_population_scales(train):
  per_person = {}
  for r in _by_domain(train, "bios"):
    per_person.setdefault(r["person"], set()).add(r["text"])
  assert min(len(texts) for texts in per_person.values()) == 3  # 300 bios, 100 people
  big = synthetic.CorpusConfig(num_docs=15_000)  # 3000 bios: one person per three
  assert len({r["person"] for r in synthetic.iter_documents(big, "train", "bios")}) == 1000


# ----------------------------------------------------------------------------------------------
# Invariants the held-out guarantees rest on.


def test_no_noun_form_is_a_prefix_of_another_nouns_form():
  for (a, b) in itertools.permutations(prose._NOUNS, 2):
    assert not [x for x in a for y in b if y.startswith(x)], (a, b)


def test_no_variable_name_ends_another():
  names = set(code._VARS + code._FUNCS + code._LISTS + code._ARGS)
  assert not [(a, b) for a, b in itertools.permutations(names, 2) if b.endswith(a)]


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("kwargs, message", [
    ({"num_docs": 0}, "num_docs must be a positive integer"),
    ({"domain_weights": (("wiki", 1.0),)}, "Unknown domain 'wiki'.*valid domains: web"),
    ({"domain_weights": {"web": -1.0, "math": 1.0}}, "Weight of 'web' is -1.0.*>= 0"),
    ({"domain_weights": {"web": 0.0}}, "All domain weights are 0"),
    ({"domain_weights": (("web", 1.0), ("web", 2.0))}, "'web' appears twice"),
    ({"validation_fraction": 0.9}, r"validation_fraction must be in \[0, 0.5\]"),
    ({"num_probes": -1}, "num_probes must be a non-negative integer"),
])
def test_bad_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic.CorpusConfig(**kwargs)


def test_config_accepts_numpy_ints_and_a_weight_mapping():
  np = pytest.importorskip("numpy")
  config = synthetic.CorpusConfig(num_docs=np.int64(1500), seed=np.int32(3), num_probes=120,
                                  domain_weights=dict(synthetic.DEFAULT_WEIGHTS))
  assert config == CONFIG and hash(config) == hash(CONFIG)
  assert type(config.num_docs) is int  # so that the manifest serialises


def test_bad_access_errors():
  with pytest.raises(IndexError, match="bios/train has 300 documents; index 300"):
    synthetic.document(CONFIG, "train", "bios", 300)
  with pytest.raises(ValueError, match="Unknown split 'test'; valid: train, validation"):
    synthetic.domain_counts(CONFIG, "test")
  with pytest.raises(ValueError, match="Unknown domain 'wiki'"):
    synthetic.probes(CONFIG, "wiki")


# ----------------------------------------------------------------------------------------------
# CLI.


def test_cli_writes_parseable_jsonl(tmp_path, capsys):
  out = tmp_path / "corpus"
  manifest = synthetic.main(["--out", str(out), "--docs", "300", "--seed", "1",
                             "--probes", "10"])
  on_disk = json.loads((out / "manifest.json").read_text())
  assert on_disk == manifest
  assert on_disk["config"]["num_docs"] == 300
  assert on_disk["probe_counts"] == {d: {k: 10 for k in synthetic.PROBE_KINDS[d]}
                                     for d in synthetic.PROBE_DOMAINS}
  assert on_disk["probe_chance"] == {"bios": 0.25, "math": 0.25, "code": 0.25, "prose": 0.5}
  config = synthetic.CorpusConfig(num_docs=300, seed=1, num_probes=10)
  for split in synthetic.SPLITS:
    for domain in synthetic.DOMAINS:
      lines = (out / split / f"{domain}.jsonl").read_text().splitlines()
      records = [json.loads(line) for line in lines]
      assert len(records) == on_disk["counts"][split][domain]
      assert records == list(synthetic.iter_documents(config, split, domain))
  for domain in synthetic.PROBE_DOMAINS:
    records = [json.loads(l) for l in (out / "probes" / f"{domain}.jsonl").read_text().splitlines()]
    kinds = synthetic.PROBE_KINDS[domain]
    assert [set(r) for r in records] == [{"id", "domain", "kind", "prompt", "answer",
                                          "candidates"}] * 10 * len(kinds)
    assert [r["kind"] for r in records] == [k for k in kinds for _ in range(10)]
  assert '"train"' in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--docs", "0"], "num_docs must be a positive integer, got 0; set num_docs (--docs)"),
    (["--weights", "wiki=1"], "Unknown domain 'wiki' in domain_weights; valid domains"),
    (["--weights", "web=-1,math=1"], "Weight of 'web' is -1.0"),
    (["--weights", "web"], "Bad --weights entry 'web': expected DOMAIN=WEIGHT"),
])
def test_cli_bad_arguments(tmp_path, capsys, args, message):
  with pytest.raises(SystemExit) as exit_info:
    synthetic.main(["--out", str(tmp_path / "x")] + args)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


def test_cli_out_is_a_file(tmp_path, capsys):
  path = tmp_path / "file.txt"
  path.write_text("not a directory")
  with pytest.raises(SystemExit):
    synthetic.main(["--out", str(path), "--docs", "10"])
  assert "is a file; pass a directory for --out" in capsys.readouterr().err
  assert path.read_text() == "not a directory"
