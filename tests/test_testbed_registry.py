"""Tests for the testbed's domain registry: stream keys by name, not by registration position."""

import zlib

import pytest

from mixjax.testbed import corpus
from mixjax.testbed import registry

CONFIG = corpus.CorpusConfig(num_docs=500, seed=2, num_probes=20,
                             domain_weights={d: 1.0 for d in corpus.DOMAINS})
# The keys the corpus had when they were list positions (None: the plain probe stream).
HISTORICAL_KEYS = {"web": 0, "bios": 1, "math": 2, "code": 3, "prose": 4}
HISTORICAL_KIND_KEYS = {"bios": {"closed_book": None, "in_context": 1, "relation": 2},
                        "math": {"arithmetic": None, "magnitude": 1},
                        "code": {"output": None},
                        "prose": {"attractor": None, "agreement": 1}}


def _dummy_document(config, split, index, d):
  return {"text": f"dummy {split} {index}: {d.below(10**9)}"}


def _dummy_probe(config, d):
  return f"dummy {d.below(10**9)}", "yes", ["no"]


DUMMY = registry.Domain("dummy", _dummy_document, probe_kinds=(
    registry.ProbeKind("only", _dummy_probe),))


def _snapshot(config):
  """Every document and probe of the registered domains, by domain."""
  return {d: (list(corpus.iter_documents(config, "train", d))
              + list(corpus.iter_documents(config, "validation", d)) + corpus.probes(config, d))
          for d in corpus.DOMAINS}


@pytest.fixture
def dummy_first():
  """The dummy domain registered first (before web), removed again after the test."""
  registry.register(DUMMY, before="web")
  try:
    yield DUMMY
  finally:
    registry.unregister(DUMMY.name)


def test_a_new_domain_anywhere_leaves_existing_documents_identical(dummy_first):
  registry.unregister(dummy_first.name)
  before = _snapshot(CONFIG)
  registry.register(dummy_first, before="web")
  assert corpus.DOMAINS == ("dummy", "web", "bios", "math", "code", "prose")
  # With weight 0 (unnamed) the dummy writes nothing and every other domain is unchanged.
  after = _snapshot(CONFIG)
  assert after.pop("dummy")[0]["domain"] == "dummy"  # only its probe: no documents
  assert after == before
  # With its own share on top, the others keep their counts and so their documents.
  weighted = corpus.CorpusConfig(num_docs=600, seed=2, num_probes=20,
                                 domain_weights={d: 1.0 for d in corpus.DOMAINS})
  assert corpus.domain_counts(weighted)["dummy"] == 100
  after = _snapshot(weighted)
  assert len(after.pop("dummy")) == 100 + 5 + 20
  assert after == before


def test_a_new_domain_is_listed_and_written(dummy_first, tmp_path):
  assert "dummy" in corpus.PROBE_DOMAINS and list(corpus.PROBE_KINDS["dummy"]) == ["only"]
  config = corpus.CorpusConfig(num_docs=20, num_probes=3, domain_weights={"dummy": 1.0})
  manifest = corpus.write_corpus(tmp_path, config)
  assert manifest["counts"]["train"]["dummy"] == 20
  assert manifest["probe_counts"]["dummy"] == {"only": 3}
  assert len((tmp_path / "train" / "dummy.jsonl").read_text().splitlines()) == 20


def test_stream_keys_are_unique_and_historical_ones_pinned():
  # Kind keys are unique within a domain: HISTORICAL_KIND_KEYS's values are distinct.
  keys = [d.stream_key for d in registry.domains()]
  assert len(set(keys)) == len(keys)
  assert {d.name: d.stream_key for d in registry.domains()} == HISTORICAL_KEYS
  assert {d.name: {k.name: k.stream_key for k in d.probe_kinds}
          for d in registry.domains() if d.probe_kinds} == HISTORICAL_KIND_KEYS
  assert DUMMY.stream_key == zlib.crc32(b"dummy")  # default: by name
  assert DUMMY.probe_kinds[0].stream_key == zlib.crc32(b"only")


def test_duplicate_name_or_stream_key_is_rejected():
  with pytest.raises(ValueError, match="Duplicate domain name 'bios'"):
    registry.register(registry.Domain("bios", _dummy_document, stream_key=99))
  with pytest.raises(ValueError, match="Duplicate domain stream_key 2"):
    registry.register(registry.Domain("algebra", _dummy_document, stream_key=2))
  twins = (registry.ProbeKind("a", _dummy_probe, stream_key=7),
           registry.ProbeKind("b", _dummy_probe, stream_key=7))
  with pytest.raises(ValueError, match="Duplicate algebra probe kind stream_key 7"):
    registry.register(registry.Domain("algebra", _dummy_document, probe_kinds=twins))
  plain = (registry.ProbeKind("a", _dummy_probe, plain_stream=True),
           registry.ProbeKind("b", _dummy_probe, plain_stream=True))
  with pytest.raises(ValueError, match="stream_key 'plain stream'"):
    registry.register(registry.Domain("algebra", _dummy_document, probe_kinds=plain))
  with pytest.raises(ValueError, match="takes no stream_key"):
    registry.ProbeKind("a", _dummy_probe, stream_key=1, plain_stream=True)
  assert "algebra" not in corpus.DOMAINS  # a rejected domain is not half registered
