"""Cross-document probes for In-Context Pretraining experiments, built from a frozen bios corpus.

Each probe puts one biography in front of a statement about a person, joined the way training
contexts join documents (`bio tokens, EOS, statement tokens`), and asks which candidate completes
it (one right answer; candidates start with a space). This module builds the probe records, pure
data; `mixjax.eval.context_probes` turns them into token batches scored like the corpus's own
probes (mean NLL per candidate token). Kinds:

  same_person   a held-out (validation) bio of P, then "P works at" / "P lives in"; the answer
                is in the bio, the three distractors (same attribute) are not.
  colleague     a held-out bio of A, then the statement about B, a colleague A's bio names; B's
                employer and city are A's, so the answer is only in A's bio.
  unrelated     a held-out bio of U (no colleague of P's), then the statement about P; one
                distractor is U's value, which the context states: copying whatever the context
                holds scores below chance (0), reading whom it is about scores chance.
  *_closed_book the statements of same_person and colleague without the bio (chance unless the
                model memorised the person from training).

Everything comes from the bios JSONL records ("person", "name", "related_people", "city",
"employer"); the statement formats are the ones the train bios use ("X works at EMPLOYER in",
"X, a job, lives in CITY"), so no template of the generator is imported.
"""

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Statement per attribute; `{name}` is the person the probe asks about.
STATEMENTS = {"employer": "{name} works at", "city": "{name} lives in"}
KINDS = ("same_person", "colleague", "unrelated", "same_person_closed_book",
         "colleague_closed_book")
NUM_DISTRACTORS = 3
# Stands for EOS between documents while prompts are text (see `mixjax.eval.context_probes`), so
# no probe document may hold it: `check_documents` refuses them.
DOC_BREAK = "\x00"


def check_documents(texts: Iterable[str], where: str) -> None:
  """Raises ValueError, naming `where`, if a text holds `DOC_BREAK`; returns None otherwise."""
  if any(DOC_BREAK in t for t in texts):
    raise ValueError(f"{where} holds a NUL character; probes use it to stand for EOS between "
                     f"documents. Remove it from the text.")


def read_jsonl(path: str) -> list[dict]:
  with open(path, "rb") as f:
    return [json.loads(line) for line in f if line.strip()]


def load_bios(corpus_dir: str) -> tuple[list[dict], list[dict]]:
  """(train, validation) bios records of a corpus written by `mixjax.testbed.corpus`."""
  return tuple(read_jsonl(os.path.join(corpus_dir, split, "bios.jsonl"))
               for split in ("train", "validation"))


def _mentions(text: str, value: str) -> bool:
  return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


class _Builder:
  """Draws probes from one seeded stream; `people` maps person id -> name, employer, city."""

  def __init__(self, people: Mapping[str, dict], seed: int):
    self.people = people
    self.pools = {a: sorted({p[a] for p in people.values()}) for a in STATEMENTS}
    self.rng = np.random.default_rng(seed)

  def attribute(self, context: str, person: dict, lure: dict | None = None) -> str | None:
    """A random attribute whose answer about `person` the context states; with `lure`, one
    whose value for `lure` it states and whose answer it does not."""
    if lure is None:
      usable = [a for a in STATEMENTS if _mentions(context, person[a])]
    else:
      usable = [a for a in STATEMENTS
                if _mentions(context, lure[a]) and not _mentions(context, person[a])]
    return usable[self.rng.integers(len(usable))] if usable else None

  def probe(self, kind: str, context: str, person: dict, attribute: str,
            lures: Sequence[str] = ()) -> dict:
    """The probe about `person`'s `attribute`; distractors are `lures`, then pool values that
    the context does not mention."""
    answer = person[attribute]
    others = [v for v in self.pools[attribute]
              if v != answer and v not in lures and not _mentions(context, v)]
    picked = self.rng.choice(len(others), NUM_DISTRACTORS - len(lures), replace=False)
    candidates = [answer, *lures, *(others[i] for i in picked)]
    candidates = [" " + candidates[i] for i in self.rng.permutation(len(candidates))]
    return {"kind": kind, "attribute": attribute, "documents": [context],
            "prompt": STATEMENTS[attribute].format(name=person["name"]),
            "answer": " " + answer, "candidates": candidates}


def people_table(records: Iterable[dict]) -> dict[str, dict]:
  """person id -> {"name", "employer", "city"} from bios records."""
  return {r["person"]: {k: r[k] for k in ("name", "employer", "city")} for r in records}


def build_probes(contexts: Sequence[dict], people: Mapping[str, dict], max_per_kind: int,
                 seed: int = 0) -> dict[str, list[dict]]:
  """Probes of every kind in KINDS, at most `max_per_kind` each, from `contexts` (bios records,
  held-out ones for the experiment) and `people` (`people_table` of every bios record).

  Each context bio gives at most one probe per in-context kind. A pure function of the inputs
  and `seed`.
  """
  builder = _Builder(people, seed)
  probes = {kind: [] for kind in KINDS}
  everyone = sorted(people)
  for record in contexts:
    text = record["text"]
    check_documents([text], f"Bios record {record.get('id')}")
    owner = people[record["person"]]
    attribute = builder.attribute(text, owner)
    if attribute and len(probes["same_person"]) < max_per_kind:
      probes["same_person"].append(builder.probe("same_person", text, owner, attribute))
    colleagues = [p for p in record["related_people"] if p in people]
    if colleagues and len(probes["colleague"]) < max_per_kind:
      mate = people[colleagues[builder.rng.integers(len(colleagues))]]
      attribute = builder.attribute(text, mate)
      if attribute:
        probes["colleague"].append(builder.probe("colleague", text, mate, attribute))
    subject = everyone[builder.rng.integers(len(everyone))]
    if len(probes["unrelated"]) < max_per_kind and subject not in (record["person"], *colleagues):
      attribute = builder.attribute(text, people[subject], lure=owner)
      if attribute:
        probes["unrelated"].append(builder.probe("unrelated", text, people[subject], attribute,
                                                 lures=[owner[attribute]]))
  for kind in ("same_person", "colleague"):
    probes[f"{kind}_closed_book"] = [dict(p, kind=f"{kind}_closed_book", documents=[])
                                     for p in probes[kind]]
  return probes


def probes_from_corpus(corpus_dir: str, max_per_kind: int = 100,
                       seed: int = 0) -> dict[str, list[dict]]:
  """`build_probes` over a corpus directory: validation bios as contexts."""
  train, validation = load_bios(corpus_dir)
  return build_probes(validation, people_table(train + validation), max_per_kind, seed)

