"""Linked documents: pairs of short documents that share verbatim spans of made-up words (a
person's name, employer, town and project), a cross-document signal that only copying can use.

The second document of a pair restates what the first said about the shared names; the words
are drawn fresh for every pair, so no amount of training predicts them without the partner in
context. Records carry `person` and `related_people` (the partner) like the testbed's bios, so
`context_loss.related_pairs` pairs them. Pure function of (count, seed, split).
"""

import numpy as np

from mixjax.experiments import made_up

DOMAIN = "linked"


def _word(rng: np.random.Generator) -> str:
  return made_up.random_strings(1, words=1, seed=int(rng.integers(2**63)))[0]


def linked_records(pairs: int, seed: int = 0, split: str = "train") -> list[dict]:
  """`2 * pairs` records (`id`, `domain`, `text`, `person`, `related_people`), pair by pair."""
  rng = np.random.default_rng([seed, ("train", "validation").index(split)])
  out = []
  for i in range(pairs):
    first, last, other, org, town, project = (_word(rng) for _ in range(6))
    name, colleague = f"{first} {last}", f"{other} {last[::-1].capitalize()}"
    texts = (f"{name} is an engineer at {org} in {town}. {name} leads the {project} project.",
             f"{colleague} joined {org} in {town} to work with {name} on the {project} project.")
    ids = (f"{split}-{i}-a", f"{split}-{i}-b")
    for k, text in enumerate(texts):
      out.append({"id": f"{DOMAIN}-{ids[k]}", "domain": DOMAIN, "text": text,
                  "person": ids[k], "related_people": [ids[1 - k]]})
  return out
