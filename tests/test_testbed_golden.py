"""Golden test: the testbed corpus stays byte-identical to what the issue-start code wrote.

tests/golden/testbed_sha256.json holds the sha256 of every file that `write_corpus` writes for
1,000 train documents per domain, and of each probe kind's records. It was made from the code of
commit 7b17b41 (`mixjax/data/synthetic.py` there) with

  git show 7b17b41:mixjax/data/synthetic.py > /tmp/synthetic_orig.py
  python tests/test_testbed_golden.py --module /tmp/synthetic_orig.py --commit 7b17b41 \
      --how "git show 7b17b41:mixjax/data/synthetic.py > /tmp/synthetic_orig.py"

Runs, results and probe sets recorded since then rest on these bytes, so a mismatch is a bug,
unless a stream key or a generator was changed on purpose: then regenerate the golden with
`python tests/test_testbed_golden.py --commit <rev>` and say in the commit why the corpus had to change.
"""

import argparse
import hashlib
import importlib.util
import json
import pathlib
import sys
import tempfile

import pytest

from mixjax.testbed import corpus

GOLDEN = pathlib.Path(__file__).parent / "golden" / "testbed_sha256.json"
DOCS_PER_DOMAIN = 1000
WHAT = ("sha256 of each file write_corpus writes (equal domain weights, "
        f"{DOCS_PER_DOMAIN} train docs per domain, default seed, validation_fraction and "
        "num_probes) and of each probe kind's records as canonical JSON lines (_canonical)")


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _canonical(records) -> bytes:
  """One JSON line per record, keys sorted, no spaces: independent of dict order."""
  return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n"
                 for r in records).encode()


def golden_config(module):
  """The pinned config, built with `module`'s CorpusConfig: equal weights over its domains."""
  domains = module.DOMAINS
  config = module.CorpusConfig(num_docs=DOCS_PER_DOMAIN * len(domains),
                               domain_weights={d: 1.0 for d in domains})
  counts = module.domain_counts(config, "train")
  assert counts == {d: DOCS_PER_DOMAIN for d in domains}, counts
  return config


def corpus_hashes(module, out_dir: pathlib.Path) -> dict[str, str]:
  """{"files/<path>": sha256, "probes/<domain>/<kind>": sha256} for the corpus `module` writes."""
  config = golden_config(module)
  module.write_corpus(out_dir, config)
  hashes = {f"files/{p.relative_to(out_dir).as_posix()}": _sha256(p.read_bytes())
            for p in sorted(out_dir.rglob("*")) if p.is_file()}
  for domain in module.PROBE_DOMAINS:
    for kind in module.PROBE_KINDS[domain]:
      hashes[f"probes/{domain}/{kind}"] = _sha256(_canonical(module.probes(config, domain, kind)))
  return hashes


@pytest.fixture(scope="module")
def hashes(tmp_path_factory):
  return corpus_hashes(corpus, tmp_path_factory.mktemp("golden_corpus"))


def test_golden_covers_every_file_and_probe_kind(hashes):
  golden = json.loads(GOLDEN.read_text())["sha256"]
  assert sorted(hashes) == sorted(golden), (
      "The testbed now writes other files or probe kinds than the golden pins: missing "
      f"{sorted(set(golden) - set(hashes))}, new {sorted(set(hashes) - set(golden))}. A new "
      "domain or kind must not change existing ones; if it is meant to, regenerate the golden "
      "(python tests/test_testbed_golden.py --commit <rev>) and say why in the commit.")


def test_corpus_is_byte_identical_to_the_golden(hashes):
  golden = json.loads(GOLDEN.read_text())["sha256"]
  changed = [name for name in golden if name in hashes and hashes[name] != golden[name]]
  assert not changed, (
      f"The testbed corpus changed in {changed} (sha256 differs from {GOLDEN.name}, made at "
      "commit 7b17b41). Earlier runs and recorded results used those bytes: find what changed "
      "the draws (a stream key, a draw order, a generator). If the change is intended, "
      "regenerate the golden with `python tests/test_testbed_golden.py --commit <rev>` and explain in the "
      "commit message why the corpus had to change.")


def _load(path: str):
  """A corpus module from a file (e.g. an old synthetic.py taken out with git show)."""
  spec = importlib.util.spec_from_file_location("golden_source", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(argv=None) -> None:
  """Writes GOLDEN from `--module FILE` (default: the current mixjax.testbed.corpus)."""
  parser = argparse.ArgumentParser(description=f"Regenerate {GOLDEN}")
  parser.add_argument("--module", default=None, help="corpus module file to hash")
  parser.add_argument("--commit", required=True, help="commit whose code is hashed")
  parser.add_argument("--how", default=None, help="how --module was made, for the header")
  args = parser.parse_args(argv)
  module = _load(args.module) if args.module else corpus
  with tempfile.TemporaryDirectory() as tmp:
    sha = corpus_hashes(module, pathlib.Path(tmp))
  command = f"python tests/test_testbed_golden.py --commit {args.commit}"
  command += f" --module {args.module}" if args.module else ""
  header = {"made_by": [args.how, command] if args.how else [command],
            "commit": args.commit, "what": WHAT}
  GOLDEN.parent.mkdir(exist_ok=True)
  GOLDEN.write_text(json.dumps({**header, "sha256": sha}, indent=1, sort_keys=True) + "\n")
  print(f"wrote {len(sha)} hashes to {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":
  main()
