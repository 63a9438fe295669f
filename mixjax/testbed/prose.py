"""prose: a small probabilistic grammar with subject-verb agreement; probes test the verb's
number after an attractor noun of the other number (held-out noun pairs) and without one."""

import functools
import itertools
from collections.abc import Sequence

from mixjax.testbed import config as config_lib
from mixjax.testbed import draws
from mixjax.testbed import registry
from mixjax.testbed import text

NAME = "prose"
# No noun form is a prefix of another noun's forms, so a probe prompt ending in one cannot hide
# inside a train sentence about another noun.
_NOUNS = (("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"),
          ("fox", "foxes"), ("wolf", "wolves"), ("mouse", "mice"), ("goose", "geese"),
          ("child", "children"), ("girl", "girls"), ("boy", "boys"), ("man", "men"),
          ("woman", "women"), ("teacher", "teachers"), ("farmer", "farmers"),
          ("baker", "bakers"), ("doctor", "doctors"), ("sailor", "sailors"),
          ("painter", "painters"), ("king", "kings"), ("queen", "queens"),
          ("student", "students"), ("writer", "writers"), ("friend", "friends"),
          ("house", "houses"), ("tree", "trees"), ("river", "rivers"), ("bridge", "bridges"),
          ("garden", "gardens"), ("village", "villages"), ("road", "roads"),
          ("window", "windows"), ("table", "tables"), ("lamp", "lamps"), ("ship", "ships"),
          ("hill", "hills"), ("stone", "stones"), ("box", "boxes"), ("key", "keys"),
          ("tower", "towers"))
_ADJECTIVES = ("old", "young", "small", "big", "quiet", "happy", "tired", "brave", "gentle",
               "clever", "red", "grey")
_INTRANSITIVE = (("runs", "run"), ("sleeps", "sleep"), ("sings", "sing"), ("waits", "wait"),
                 ("smiles", "smile"), ("laughs", "laugh"), ("rests", "rest"), ("walks", "walk"),
                 ("jumps", "jump"), ("listens", "listen"))
_TRANSITIVE = (("sees", "see"), ("likes", "like"), ("follows", "follow"), ("finds", "find"),
               ("helps", "help"), ("watches", "watch"), ("carries", "carry"), ("paints", "paint"),
               ("visits", "visit"), ("remembers", "remember"))
_VERBS = _INTRANSITIVE + _TRANSITIVE  # (singular, plural), indexed by `plural` like _NOUNS
_ADVERBS = ("quickly", "slowly", "quietly", "often", "again", "today", "happily", "alone",
            "outside", "early")
_PREPOSITIONS = ("near", "behind", "beside", "under", "by", "with", "next to")
_PROSE_TITLES = ("A short story", "Chapter one", "Notes from the village", "Morning",
                 "The long day", "An old tale")


@functools.lru_cache(maxsize=8)
def noun_pairs(seed: int) -> dict[str, tuple[tuple[int, int], ...]]:
  """Returns split -> (subject noun, attractor noun) pairs that the split may put in
  'The N1 near the N2'."""
  pairs = list(itertools.permutations(range(len(_NOUNS)), 2))
  return draws.split_table(seed, NAME, pairs, lambda p: f"{_NOUNS[p[0]][0]}|{_NOUNS[p[1]][0]}")


def _noun_phrase(d: draws.Draws) -> tuple[str, bool]:
  """('the [adjective] noun', plural?); these never take a prepositional phrase."""
  forms, plural = d.choice(_NOUNS), d.chance(0.5)
  adjective = d.choice(_ADJECTIVES) + " " if d.chance(0.4) else ""
  return f"the {adjective}{forms[plural]}", plural


def _verb_phrase(d: draws.Draws, plural: bool) -> str:
  if d.chance(0.5):
    return f"{d.choice(_INTRANSITIVE)[plural]} {d.choice(_ADVERBS)}"
  return f"{d.choice(_TRANSITIVE)[plural]} {_noun_phrase(d)[0]}"


def _clause(d: draws.Draws) -> str:
  subject, plural = _noun_phrase(d)
  return f"{subject} {_verb_phrase(d, plural)}"


def _attractor_clause(d: draws.Draws, pairs: Sequence[tuple[int, int]]) -> str:
  """'the dogs near the house run quickly': the verb agrees with the first noun."""
  subject, attractor = d.choice(pairs)
  plural = d.chance(0.5)
  return (f"the {_NOUNS[subject][plural]} {d.choice(_PREPOSITIONS)} the "
          f"{_NOUNS[attractor][d.chance(0.5)]} {_verb_phrase(d, plural)}")


def sentence(d: draws.Draws, pairs: Sequence[tuple[int, int]]) -> str:
  """Returns one grammatical sentence; attractor clauses use noun pairs from `pairs`."""
  kind = d.below(6)
  if kind == 0:
    clause = _attractor_clause(d, pairs)
  elif kind == 1:
    (first, _), (second, _) = _noun_phrase(d), _noun_phrase(d)
    clause = f"{first} and {second} {_verb_phrase(d, True)}"
  elif kind == 2:
    clause = f"{_clause(d)} because {_clause(d)}"
  elif kind == 3:
    clause = f"when {_clause(d)}, {_clause(d)}"
  else:
    clause = _clause(d)
  return text.sentence(clause) + "."


def _document(config: config_lib.CorpusConfig, split: str, index: int, d: draws.Draws) -> dict:
  """Returns {"text"}: an optional title, then sentences over `split`'s noun pairs."""
  # The first sentence always uses a noun pair owned by `split`, so splits never share a text.
  pairs = noun_pairs(config.seed)[split]
  first = text.sentence(_attractor_clause(d, pairs)) + "."
  body = " ".join([first] + text.fill(d, lambda: sentence(d, pairs), 60))
  return {"text": f"{d.choice(_PROSE_TITLES)}\n{body}" if d.chance(0.3) else body}


def _agreement_probe(config: config_lib.CorpusConfig, d: draws.Draws) -> tuple[str, str, list[str]]:
  """'The old dogs' -> ' run' vs ' runs': agreement with an adjacent subject (no attractor).

  Every such prompt occurs in train (there are few nouns); what is measured is whether the
  verb's number follows the subject's, the rule `_attractor_probe` then tests under an attractor.
  """
  del config  # the grammar is the same for every config
  forms, plural = d.choice(_NOUNS), d.chance(0.5)
  adjective = d.choice(_ADJECTIVES) + " " if d.chance(0.5) else ""
  verb = d.choice(_VERBS)
  return f"The {adjective}{forms[plural]}", verb[plural], [verb[not plural]]


def _attractor_probe(config: config_lib.CorpusConfig, d: draws.Draws) -> tuple[str, str, list[str]]:
  """'The dogs near the house' -> ' run' vs ' runs': the attractor has the other number."""
  subject, attractor = d.choice(noun_pairs(config.seed)["probe"])
  plural = d.chance(0.5)
  forms = d.choice(_VERBS)
  prompt = (f"The {_NOUNS[subject][plural]} {d.choice(_PREPOSITIONS)} "
            f"the {_NOUNS[attractor][not plural]}")
  return prompt, forms[plural], [forms[not plural]]


# The explicit stream keys are the historical ones (list positions), which keep the corpus
# byte-identical to earlier runs and recorded results.
DOMAIN = registry.Domain(NAME, _document, stream_key=4, probe_kinds=(
    registry.ProbeKind("attractor", _attractor_probe, plain_stream=True),
    registry.ProbeKind("agreement", _agreement_probe, stream_key=1)))
