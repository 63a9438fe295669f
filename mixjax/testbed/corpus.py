"""The embedded synthetic corpus: seeded text domains, each skill domain with held-out probes.

The domains differ the way pretraining domains do. `web` is the large, noisy, low-information
domain (boilerplate, typos, fragments of every topic); `bios` holds facts about a population of
linked people (colleagues name each other); `math`, `code` and `prose` hold skills (arithmetic,
tracing small programs, subject-verb agreement). Every domain but `web` has probes whose answers
are known, so a mixture's effect on one capability can be measured with a tiny byte-level model.
Each domain is one module (web.py, bios.py, ...) registered by name in registry.py (domains.py
lists them); this module turns a config into documents, probes and files.

Determinism: a document is a pure function of (config, split, domain, index). Its random draws
are SHAKE-128 words keyed by (seed, domain's stream key, stream, index) (keys.py); the world
(people, employers, links) is a pure function of (seed, number of people), drawn the same way
once and cached. Held-out items (math facts, programs, noun pairs) are picked by crc32, never by
Python's salted `hash`, and no text comes from the standard library, so the corpus is the same
on every Python and numpy version, machine and process.

  python -m mixjax.testbed --out /tmp/corpus --docs 20000 --seed 0
"""

import argparse
import dataclasses
import functools
import json
import logging
import pathlib
import shutil
from collections.abc import Iterator, Sequence

import tqdm

from mixjax.testbed import config as config_lib
from mixjax.testbed import domains  # noqa: F401  (registers the domains)
from mixjax.testbed import draws
from mixjax.testbed import keys
from mixjax.testbed import registry

# Re-exported: callers import the config and counts from here.
CorpusConfig = config_lib.CorpusConfig
DEFAULT_WEIGHTS = config_lib.DEFAULT_WEIGHTS
SPLITS = config_lib.SPLITS
domain_counts = config_lib.domain_counts
_PROBE_TRIES = 20  # draws per wanted probe before giving up on finding distinct ones


def _views() -> dict:
  """DOMAINS, PROBE_DOMAINS and PROBE_KINDS ({domain: {kind: maker}}) as they are now in the
  registry, in registration order."""
  probed = [d for d in registry.domains() if d.probe_kinds]
  return {"DOMAINS": registry.names(),
          "PROBE_DOMAINS": tuple(d.name for d in probed),
          "PROBE_KINDS": {d.name: {k.name: k.make for k in d.probe_kinds} for d in probed}}


def __getattr__(name: str):
  """Module attributes DOMAINS, PROBE_DOMAINS, PROBE_KINDS: live views of the registry, so a
  domain registered later (a test's, an experiment's) is listed too."""
  views = _views()
  if name in views:
    return views[name]
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(list(globals()) + list(_views()))


def document(config: CorpusConfig, split: str, domain: str, index: int) -> dict:
  """Document `index` of `domain` in `split`: {"id", "domain", "text", ...domain fields}.

  bios documents add "person" (id), "name", "related_people" (ids of the colleagues named in
  the text: same employer and city), "city" (where the person works) and "employer". A bios
  doc is a biography, or for half of the people one QA sheet ("Q: ...\nA: ...") in train.
  """
  entry = registry.get(domain)
  count = domain_counts(config, split)[domain]
  if not 0 <= index < count:
    raise IndexError(f"{domain}/{split} has {count} documents; index {index} is out of range.")
  d = draws.Draws(keys.document_key(config.seed, entry.stream_key, split, index))
  record = {"id": f"{domain}-{split}-{index:06d}", "domain": domain}
  record.update(entry.generate(config, split, index, d))
  return record


def iter_documents(config: CorpusConfig, split: str = "train",
                   domain: str | None = None) -> Iterator[dict]:
  """Yields every document of `split`, domain by domain (DOMAINS order), or of one `domain`."""
  names = registry.names() if domain is None else (registry.get(domain).name,)
  counts = domain_counts(config, split)
  for name in names:
    for index in range(counts[name]):
      yield document(config, split, name, index)


@functools.lru_cache(maxsize=32)
def _probes(config: CorpusConfig, domain: registry.Domain,
            kind: registry.ProbeKind) -> tuple[dict, ...]:
  """Returns up to num_probes probes of one kind with distinct prompts, from the kind's own
  stream (keyed by the domain's and the kind's stream keys)."""
  made, seen = [], set()
  for k in range(_PROBE_TRIES * config.num_probes):
    if len(made) == config.num_probes:
      break
    d = draws.Draws(keys.probe_key(config.seed, domain.stream_key, kind.stream_key, k))
    probe = kind.make(config, d)
    if probe is None or probe[0] in seen:
      continue
    prompt, answer, distractors = probe
    seen.add(prompt)
    made.append({"id": f"{domain.name}-{kind.name}-{len(made):05d}", "domain": domain.name,
                 "kind": kind.name, "prompt": prompt, "answer": " " + answer,
                 "candidates": d.shuffled([" " + c for c in [answer] + distractors])})
  if len(made) < config.num_probes:
    logging.warning("Only %d distinct %s/%s probes exist for this config (asked for %d); raise "
                    "num_docs or the %s weight, or lower num_probes.", len(made), domain.name,
                    kind.name, config.num_probes, domain.name)
  return tuple(made)


def probes(config: CorpusConfig, domain: str, kind: str | None = None) -> list[dict]:
  """Probes {"id", "domain", "kind", "prompt", "answer", "candidates"}; [] for web.

  `kind=None` gives every kind of the domain (PROBE_KINDS), num_probes of each:
    bios   closed_book  a question about a fact stated only in train biographies (held out:
                        no QA text about these people in train); in_context: the same kind
                        of question after a two-fact card that answers it; relation: which
                        of a new person's values completes "NAME graduated from" etc.;
    math   arithmetic   a held-out fact "Q: a op b =" (never in train, in any format);
                        magnitude: the same facts, distractors with other digit counts;
    code   output       the output of a held-out program;
    prose  attractor    agreement across an attractor of the other number ("The dogs near the
                        house" -> run); agreement: the same rule with an adjacent subject.
  Score a probe by the model's likelihood of each candidate after the prompt; chance is
  1 / len(candidates) (4 for bios, math and code, 2 for prose). Answers and candidates start
  with a space. Fewer than num_probes come back (with a logged warning) only when the corpus
  is too small to hold that many distinct ones (bios with few people).
  """
  entry = registry.get(domain)
  if not entry.probe_kinds:
    return []
  kinds = entry.probe_kinds if kind is None else (entry.probe_kind(kind),)
  return [dict(p, candidates=list(p["candidates"]))
          for each in kinds for p in _probes(config, entry, each)]


def _check_out_dir(out_dir: pathlib.Path) -> None:
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f"Output path {str(out_dir)!r} is a file; pass a directory for --out "
                     "(it is created if missing).")


CORPUS_ENTRIES = SPLITS + ("probes", "manifest.json")  # what write_corpus writes into --out


def _check_empty_or_overwrite(out_dir: pathlib.Path, overwrite: bool) -> None:
  """The CLI never merges into an existing directory: it refuses one that holds files, or
  (`--overwrite`) deletes the corpus files there first."""
  entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
  if not entries:
    return
  if not overwrite:
    raise ValueError(f"--out {str(out_dir)!r} is not empty ({', '.join(entries[:5])}"
                     f"{', ...' if len(entries) > 5 else ''}); choose a new or empty directory, "
                     "or pass --overwrite to replace the corpus there.")
  for name in CORPUS_ENTRIES:
    path = out_dir / name
    if path.is_dir():
      shutil.rmtree(path)
    elif path.exists():
      path.unlink()


def _write_jsonl(path: pathlib.Path, records, progress: tqdm.tqdm | None = None) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
      if progress is not None:
        progress.update(1)


def write_corpus(out_dir: str | pathlib.Path, config: CorpusConfig) -> dict:
  """Writes {train,validation}/<domain>.jsonl, probes/<domain>.jsonl and manifest.json.

  Every domain gets a file per split (empty when its weight is 0); probe files are written
  for PROBE_DOMAINS. Returns the manifest: config, counts per split, probe counts and chance
  accuracy (1 / number of candidates).
  """
  out = pathlib.Path(out_dir)
  _check_out_dir(out)
  counts = {split: domain_counts(config, split) for split in SPLITS}
  total = sum(sum(c.values()) for c in counts.values())
  with tqdm.tqdm(total=total, unit="doc", disable=total < 10_000) as progress:
    for split in SPLITS:
      for domain in registry.names():
        _write_jsonl(out / split / f"{domain}.jsonl",
                     iter_documents(config, split, domain), progress)
  probe_counts, probe_chance = {}, {}
  for domain in registry.domains():
    if not domain.probe_kinds:
      continue
    records = probes(config, domain.name)
    probe_counts[domain.name] = {kind.name: sum(r["kind"] == kind.name for r in records)
                                 for kind in domain.probe_kinds}
    probe_chance[domain.name] = 1 / len(records[0]["candidates"]) if records else None
    _write_jsonl(out / "probes" / f"{domain.name}.jsonl", records)
  manifest = {"config": dataclasses.asdict(config), "counts": counts,
              "probe_counts": probe_counts, "probe_chance": probe_chance}
  manifest["config"]["domain_weights"] = dict(config.domain_weights)
  (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
  return manifest


def _parse_weights(text: str) -> tuple[tuple[str, float], ...]:
  """'web=0.4,bios=0.2' -> (("web", 0.4), ("bios", 0.2))."""
  pairs = []
  for entry in text.split(","):
    name, _, value = entry.partition("=")
    try:
      pairs.append((name.strip(), float(value)))
    except ValueError:
      raise ValueError(f"Bad --weights entry {entry!r}: expected DOMAIN=WEIGHT, e.g. "
                       "web=0.4,bios=0.2,math=0.15,code=0.15,prose=0.1.") from None
  return tuple(pairs)


def main(argv: Sequence[str] | None = None) -> dict:
  """CLI: python -m mixjax.testbed --out DIR --docs N [--seed S] [--weights ...]."""
  parser = argparse.ArgumentParser(prog="python -m mixjax.testbed",
                                   description="Write the embedded synthetic corpus as JSONL.")
  parser.add_argument("--out", required=True, help="output directory (created if missing)")
  parser.add_argument("--docs", type=int, default=CorpusConfig.num_docs,
                      help="train documents over all domains")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--weights", default=None,
                      help="domain weights, e.g. web=0.4,bios=0.2 (unnamed domains get 0)")
  parser.add_argument("--validation_fraction", type=float,
                      default=CorpusConfig.validation_fraction)
  parser.add_argument("--probes", type=int, default=CorpusConfig.num_probes,
                      help="probes per probe domain")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace the corpus in a non-empty --out (its train/, validation/, "
                           "probes/ and manifest.json; nothing else there is touched)")
  args = parser.parse_args(argv)
  try:
    config = CorpusConfig(
        num_docs=args.docs, seed=args.seed, validation_fraction=args.validation_fraction,
        num_probes=args.probes,
        domain_weights=_parse_weights(args.weights) if args.weights else DEFAULT_WEIGHTS)
    _check_out_dir(pathlib.Path(args.out))
    _check_empty_or_overwrite(pathlib.Path(args.out), args.overwrite)
  except ValueError as e:
    parser.error(str(e))
  manifest = write_corpus(args.out, config)
  print(json.dumps({"out": args.out, **manifest["counts"]}))
  return manifest


if __name__ == "__main__":
  main()
