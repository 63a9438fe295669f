"""The embedded synthetic corpus: five seeded text domains, each skill domain with held-out probes.

The domains differ the way pretraining domains do. `web` is the large, noisy, low-information
domain (boilerplate, typos, fragments of every topic); `bios` holds facts about a population of
linked people (colleagues name each other); `math`, `code` and `prose` hold skills (arithmetic,
tracing small programs, subject-verb agreement). Every domain but `web` has probes whose answers
are known, so a mixture's effect on one capability can be measured with a tiny byte-level model.

Determinism: a document is a pure function of (config, split, domain, index). Its random draws
are SHAKE-128 words keyed by (seed, domain, stream, index); the world (people, employers, links)
is a pure function of (seed, number of people), drawn the same way once and cached. Held-out
items (math facts, programs, noun pairs) are picked by crc32, never by Python's salted `hash`, and
no text comes from the standard library, so the corpus is the same on every Python and numpy
version, machine and process.

  python -m mixjax.testbed --out /tmp/corpus --docs 20000 --seed 0
"""

import argparse
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import numbers
import operator
import pathlib
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import tqdm

DOMAINS = ("web", "bios", "math", "code", "prose")
PROBE_DOMAINS = ("bios", "math", "code", "prose")
SPLITS = ("train", "validation")
DEFAULT_WEIGHTS = (("web", 0.4), ("bios", 0.2), ("math", 0.15), ("code", 0.15), ("prose", 0.1))

# Stream ids in seed keys: the splits, the probes, the world.
_STREAMS = {"train": 0, "validation": 1, "probe": 2}
_WORLD_STREAM = 3
_MAX_VALIDATION_FRACTION = 0.5
# Bodies of at most 450 chars keep documents within ~100-600 chars, so several fit in one
# 256-1024 byte context.
_MAX_BODY_CHARS = 450
_BIOS_PER_PERSON = 3  # train bios per person; sets the population size
_MIN_PEOPLE = 100  # enough probe people for 200 bios probes even in tiny corpora
_QA_VERSIONS = (1,)  # a QA person's train bio number 1 is a QA card instead of a biography
_PROBE_TRIES = 20  # draws per wanted probe before giving up on finding distinct ones
_BLOCK_FORMAT = struct.Struct("<64Q")  # one block of random words


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What to generate; hashable so that derived tables are cached per config.

  `num_docs` counts train documents over all domains; validation adds
  `validation_fraction` of each domain's count on top. `domain_weights` may also be given as a
  mapping; it is stored as a tuple of (domain, weight) pairs, and unnamed domains get weight 0.
  """
  num_docs: int = 20_000
  seed: int = 0
  domain_weights: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS
  validation_fraction: float = 0.05
  num_probes: int = 200

  def __post_init__(self):
    weights = self.domain_weights
    pairs = weights.items() if isinstance(weights, Mapping) else weights
    object.__setattr__(self, "domain_weights", tuple((str(d), float(w)) for d, w in pairs))
    _check_config(self)
    for name in ("num_docs", "seed", "num_probes"):  # numpy ints would not serialise to JSON
      object.__setattr__(self, name, int(getattr(self, name)))
    object.__setattr__(self, "validation_fraction", float(self.validation_fraction))


def _is_count(value) -> bool:
  """A non-negative integer (numpy integers included, bools not)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def _check_config(config: CorpusConfig) -> None:
  """Raises ValueError naming the bad field and what would be valid."""
  if not _is_count(config.num_docs) or config.num_docs < 1:
    raise ValueError(f"num_docs must be a positive integer, got {config.num_docs!r}; "
                     "set num_docs (--docs) to 1 or more.")
  if not _is_count(config.seed):
    raise ValueError(f"seed must be a non-negative integer, got {config.seed!r}.")
  names = [d for d, _ in config.domain_weights]
  for domain, weight in config.domain_weights:
    if domain not in DOMAINS:
      raise ValueError(f"Unknown domain {domain!r} in domain_weights; valid domains: "
                       f"{', '.join(DOMAINS)}.")
    if names.count(domain) > 1:
      raise ValueError(f"Domain {domain!r} appears twice in domain_weights; give it once.")
    if not math.isfinite(weight) or weight < 0:
      raise ValueError(f"Weight of {domain!r} is {weight}; weights must be finite and >= 0 "
                       "(use 0 to leave a domain out).")
  if not any(w > 0 for _, w in config.domain_weights):
    raise ValueError("All domain weights are 0; give at least one domain a positive weight, "
                     "e.g. web=0.4,bios=0.2.")
  if not 0 <= config.validation_fraction <= _MAX_VALIDATION_FRACTION:
    raise ValueError(f"validation_fraction must be in [0, {_MAX_VALIDATION_FRACTION}], got "
                     f"{config.validation_fraction}.")
  if not _is_count(config.num_probes):
    raise ValueError(f"num_probes must be a non-negative integer, got {config.num_probes!r}.")


def _check_name(kind: str, name: str, valid: Sequence[str]) -> None:
  if name not in valid:
    raise ValueError(f"Unknown {kind} {name!r}; valid: {', '.join(valid)}.")


# ----------------------------------------------------------------------------------------------
# Counts.


@functools.lru_cache(maxsize=64)
def _train_counts(config: CorpusConfig) -> tuple[int, ...]:
  """Train docs per domain (DOMAINS order): largest-remainder shares of num_docs."""
  weights = dict(config.domain_weights)
  total = sum(weights.values())
  quotas = [config.num_docs * weights.get(d, 0.0) / total for d in DOMAINS]
  counts = [math.floor(q) for q in quotas]
  by_remainder = sorted(range(len(DOMAINS)), key=lambda i: counts[i] - quotas[i])  # stable
  for i in by_remainder[:config.num_docs - sum(counts)]:
    counts[i] += 1
  return tuple(counts)


def _counts(config: CorpusConfig, split: str) -> tuple[int, ...]:
  """Docs per domain in `split`; validation rounds half up and keeps at least 1 per live domain."""
  _check_name("split", split, SPLITS)
  train = _train_counts(config)
  if split == "train":
    return train
  fraction = config.validation_fraction
  return tuple(max(1, int(n * fraction + 0.5)) if n and fraction else 0 for n in train)


def domain_counts(config: CorpusConfig, split: str = "train") -> dict[str, int]:
  """Number of documents per domain in `split` ("train" or "validation")."""
  return dict(zip(DOMAINS, _counts(config, split)))


# ----------------------------------------------------------------------------------------------
# Random draws.


class _Draws:
  """The uniform draws of one document (or of the world): a pure function of `key`.

  64-bit words from SHAKE-128 of (key, block number), 64 words a block: stable across Python and
  numpy versions and machines, and ~2 us per document against ~15 us for a numpy Generator.
  """
  __slots__ = ("_key", "_block", "_words", "_pos")

  def __init__(self, key: Sequence[int]):
    self._key = ",".join(map(str, key)).encode()
    self._block = 0
    self._refill()

  def _refill(self) -> None:
    digest = hashlib.shake_128(b"%s#%d" % (self._key, self._block)).digest(_BLOCK_FORMAT.size)
    self._words = _BLOCK_FORMAT.unpack(digest)
    self._block += 1
    self._pos = 0

  def below(self, n: int) -> int:
    """An int in [0, n) (multiply-shift of a 64-bit word; bias below n / 2**64)."""
    if self._pos == len(self._words):
      self._refill()
    word = self._words[self._pos]
    self._pos += 1
    return (word * n) >> 64

  def between(self, low: int, high: int) -> int:
    """An int in [low, high], both ends included."""
    return low + self.below(high - low + 1)

  def chance(self, p: float) -> bool:
    return self.below(1 << 30) < p * (1 << 30)

  def choice(self, items: Sequence):
    return items[self.below(len(items))]

  def shuffled(self, items: Sequence) -> list:
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
      j = self.below(i + 1)
      out[i], out[j] = out[j], out[i]
    return out

  def sample(self, items: Sequence, k: int) -> list:
    """k distinct items (partial Fisher-Yates)."""
    out = list(items)
    for i in range(k):
      j = i + self.below(len(out) - i)
      out[i], out[j] = out[j], out[i]
    return out[:k]


def _draws(config: CorpusConfig, domain: str, stream: str, index: int) -> _Draws:
  return _Draws((config.seed, DOMAINS.index(domain), _STREAMS[stream], index))


def _heldout_split(seed: int, domain: str, key: str) -> str:
  """Which split owns an item: 10% probe, 10% validation, 80% train (stable crc32 buckets)."""
  bucket = zlib.crc32(f"{seed}|{domain}|{key}".encode()) % 10
  return "probe" if bucket == 0 else "validation" if bucket == 1 else "train"


def _split_table(seed: int, domain: str, items: Sequence, key: Callable) -> dict[str, tuple]:
  """`items` partitioned by `_heldout_split` of `key(item)`, keyed by split name."""
  table = {name: [] for name in _STREAMS}
  for item in items:
    table[_heldout_split(seed, domain, key(item))].append(item)
  return {name: tuple(group) for name, group in table.items()}


def _fill(d: _Draws, make: Callable[[], str], low: int,
          high: int = _MAX_BODY_CHARS) -> list[str]:
  """Parts from `make()` until their length reaches a random target in [low, high] chars.

  The first part is always kept; later ones only while the total stays within `high`.
  """
  target = d.between(low, high)
  parts, size = [], 0
  while size < target:
    part = make()
    if parts and size + len(part) + 1 > high:
      break
    parts.append(part)
    size += len(part) + 1
  return parts


def _sentence(text: str) -> str:
  return text[0].upper() + text[1:]


def _article(word: str) -> str:
  return ("an " if word[0] in "aeiou" else "a ") + word


def _join_names(names: Sequence[str]) -> str:
  """'A', 'A and B', 'A, B and C'."""
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ----------------------------------------------------------------------------------------------
# The world: people, employers and who works with whom.

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "qu")
_CAP_ONSETS = tuple(o.capitalize() for o in _ONSETS)
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("ll", "nn", "rr", "ck", "ss", "nd", "rk", "lt", "rn", "ld", "x", "m", "n", "s", "t", "sh")
_STEM_ENDS = ("x", "ra", "n", "nix", "lex", "tor", "via", "rum")
_COMPANY_KINDS = ("Labs", "Systems", "Works", "Group", "Dynamics", "Foods", "Media", "Motors",
                  "Health", "Bank", "Logistics", "Studios")
# "Mara Quell": CVCV first name, CVC last name (about 9M names).
_PERSON_NAME_PARTS = (_CAP_ONSETS, _VOWELS, _ONSETS, _VOWELS, (" ",), _CAP_ONSETS, _VOWELS, _CODAS)
# "Bamonix Labs" (about 870k names).
_EMPLOYER_PARTS = (_CAP_ONSETS, _VOWELS, _ONSETS, _VOWELS, _STEM_ENDS, (" ",), _COMPANY_KINDS)

_CITIES = tuple("""Lisbon Porto Madrid Seville Paris Lyon Berlin Munich Hamburg Vienna Prague Warsaw
    Krakow Budapest Rome Milan Naples Turin Athens Oslo Bergen Stockholm Helsinki Copenhagen Dublin
    London Leeds Glasgow Edinburgh Amsterdam Utrecht Brussels Zurich Geneva Toronto Montreal Boston
    Chicago Denver Seattle Austin Lima Bogota Santiago Quito Nairobi Lagos Cairo Tunis Mumbai Delhi
    Chennai Jakarta Manila Seoul Osaka Kyoto Sydney Perth Auckland""".split())
_UNIVERSITIES = ("Northfield University", "Harlow Institute of Technology", "Westbrook College",
                 "Ashford University", "Kingsgate University", "Riverton Polytechnic",
                 "Elmwood College", "Stonebridge University", "Lakeshore Institute",
                 "Greyhaven University", "Oakridge College", "Silverpine University",
                 "Brightwater Academy", "Redcliff University", "Marlow School of Arts",
                 "Fairview Institute")
_JOBS = tuple("""engineer architect nurse teacher chemist pilot accountant designer journalist
    librarian baker lawyer physician geologist translator electrician photographer economist
    carpenter pharmacist analyst programmer musician surveyor""".split())
_HOBBIES = ("playing chess", "hiking", "painting", "gardening", "cycling", "baking bread",
            "bird watching", "rock climbing", "knitting", "sailing", "playing the violin",
            "swimming", "pottery", "photography", "fishing", "reading poetry", "running marathons",
            "collecting stamps", "playing tennis", "woodworking")
_BIRTH_YEARS = tuple(str(y) for y in range(1950, 2003))


@dataclasses.dataclass(frozen=True)
class Person:
  """One synthetic person. `colleagues` index `World.people`; `city` is where they work."""
  pid: str
  name: str
  pronoun: str  # "he" | "she"
  birth_city: str
  birth_year: str
  university: str
  job: str
  hobby: str
  employer: str
  city: str
  colleagues: tuple[int, ...]
  qa_in_train: bool  # Physics-of-LMs split: QA text in train for these, probes for the others


@dataclasses.dataclass(frozen=True)
class World:
  """People and employers; bios doc j of a split is about people[bio_order[j % len(people)]]."""
  people: tuple[Person, ...]
  employers: tuple[str, ...]
  bio_order: tuple[int, ...]


def _unique_names(d: _Draws, n: int, parts: Sequence[Sequence[str]]) -> list[str]:
  """n distinct concatenations of one string from each of `parts`."""
  total = math.prod(len(p) for p in parts)
  if n > total // 2:  # rejection sampling below stays fast while half the names are free
    raise ValueError(f"Asked for {n} distinct names but only {total // 2} can be drawn; lower "
                     "num_docs or the bios weight.")
  codes = {}  # an insertion-ordered set
  while len(codes) < n:
    codes[d.below(total)] = None
  return [_decode_name(code, parts) for code in codes]


def _decode_name(code: int, parts: Sequence[Sequence[str]]) -> str:
  """The name numbered `code` in the mixed-radix product of `parts`."""
  pieces = []
  for part in reversed(parts):
    code, i = divmod(code, len(part))
    pieces.append(part[i])
  return "".join(reversed(pieces))


def _colleague_groups(d: _Draws, n: int) -> list[list[int]]:
  """Partitions people 0..n-1 into employer groups of 2 to 4 (a last single joins its neighbour)."""
  order = d.shuffled(range(n))
  groups, start = [], 0
  while start < n:
    size = d.between(2, 4)
    groups.append(order[start:start + size])
    start += size
  if len(groups[-1]) < 2:
    groups[-2].extend(groups.pop())
  return groups


@functools.lru_cache(maxsize=4)
def _world(seed: int, num_people: int) -> World:
  """The population: a pure function of (seed, num_people)."""
  d = _Draws((seed, _WORLD_STREAM, num_people))
  names = _unique_names(d, num_people, _PERSON_NAME_PARTS)
  groups = _colleague_groups(d, num_people)
  employers = _unique_names(d, len(groups), _EMPLOYER_PARTS)
  people = [None] * num_people
  for employer, members in zip(employers, groups):
    city = d.choice(_CITIES)
    for i in members:
      people[i] = Person(
          pid=f"person-{i:06d}", name=names[i], pronoun=d.choice(("he", "she")),
          birth_city=d.choice(_CITIES), birth_year=d.choice(_BIRTH_YEARS),
          university=d.choice(_UNIVERSITIES), job=d.choice(_JOBS), hobby=d.choice(_HOBBIES),
          employer=employer, city=city, colleagues=tuple(m for m in members if m != i),
          qa_in_train=d.chance(0.5))
  return World(tuple(people), tuple(employers), tuple(d.shuffled(range(num_people))))


def _config_world(config: CorpusConfig) -> World:
  """The world for `config`: about one person per three train bios."""
  bios = _counts(config, "train")[DOMAINS.index("bios")]
  return _world(config.seed, max(_MIN_PEOPLE, -(-bios // _BIOS_PER_PERSON)))


# ----------------------------------------------------------------------------------------------
# bios.

# Openings carry the version number: bio versions of one person differ at least here, which keeps
# train and validation bios of the same person apart.
_OPENINGS = ("{name} is {job_a} living in {city}.",
             "Here is a short profile of {name}.",
             "{name}, {job_a}, lives in {city}.",
             "Meet {name}.",
             "People in {city} know {name} well.",
             "A few facts about {name} follow.",
             "{name} has an interesting life story.",
             "This biography describes {name}, {job_a} based in {city}.")
_BIO_FACTS = (
    ("{subj} was born in {birth_city} in {birth_year}.",
     "{subj} was born in {birth_year} in the city of {birth_city}.",
     "{subj} comes from {birth_city}, where {pron} was born in {birth_year}.",
     "{birth_city} is where {subj} was born, in {birth_year}."),
    ("{subj} studied at {university}.",
     "{subj} graduated from {university}.",
     "{subj} earned a degree at {university}."),
    ("{subj} works at {employer} in {city} as {job_a}, alongside {colleagues}.",
     "{subj} is {job_a} at {employer}, where {pron} works with {colleagues}.",
     "At {employer} in {city}, {subj} works as {job_a} together with {colleagues}.",
     "{subj} and {colleagues} work together at {employer}."),
    ("In {poss} free time, {subj} enjoys {hobby}.",
     "{subj} loves {hobby}.",
     "{subj} is passionate about {hobby}."),
)
# (attribute, question); the answer is getattr(person, attribute).
_QUESTIONS = (("birth_city", "Which city was {name} born in?"),
              ("birth_year", "In which year was {name} born?"),
              ("university", "Which university did {name} attend?"),
              ("employer", "Which company does {name} work for?"),
              ("job", "What is the job of {name}?"),
              ("hobby", "What does {name} do for fun?"))
# Which `_BIO_FACTS` group states each questioned attribute, under which template field.
_FACT_GROUPS = {"birth_city": 0, "birth_year": 0, "university": 1, "employer": 2, "job": 2,
                "hobby": 3}
_PLACEHOLDERS = {"job": "{job_a}", "birth_city": "{birth_city}", "birth_year": "{birth_year}",
                 "university": "{university}", "employer": "{employer}", "hobby": "{hobby}"}
_ANSWER_POOLS = {"birth_city": _CITIES, "birth_year": _BIRTH_YEARS, "university": _UNIVERSITIES,
                 "job": _JOBS, "hobby": _HOBBIES}


def _bio_fields(world: World, person: Person) -> dict[str, str]:
  """Template fields of a person (dataclasses.asdict would cost more than the whole bio)."""
  return {"name": person.name, "pron": person.pronoun,
          "poss": "his" if person.pronoun == "he" else "her", "job_a": _article(person.job),
          "city": person.city, "birth_city": person.birth_city,
          "birth_year": person.birth_year, "university": person.university,
          "employer": person.employer, "hobby": person.hobby,
          "colleagues": _join_names([world.people[c].name for c in person.colleagues])}


def _fact_sentences(world: World, person: Person, groups: Sequence[int], d: _Draws,
                    name_first: bool = False, stating: str | None = None) -> list[str]:
  """One sentence per `_BIO_FACTS` group in `groups`, in that order and in random wording.

  Each sentence names the person or uses the pronoun at random (`name_first`: the first one
  names them). `stating`: an attribute whose group's sentence must state it (not every wording
  of the employer group names the job).
  """
  fields = _bio_fields(world, person)
  sentences = []
  for group in groups:
    variants = _BIO_FACTS[group]
    if stating is not None and group == _FACT_GROUPS[stating]:
      variants = [v for v in variants if _PLACEHOLDERS[stating] in v]
    named = d.chance(0.5) or (name_first and not sentences)
    subj = person.name if named else person.pronoun
    sentences.append(_sentence(d.choice(variants).format(subj=subj, **fields)))
  return sentences


def _bio_text(world: World, person: Person, version: int, d: _Draws) -> str:
  """An opening chosen by `version`, then the facts in random order and wording."""
  opening = _OPENINGS[version].format(**_bio_fields(world, person))
  groups = d.shuffled(range(len(_BIO_FACTS)))
  return " ".join([opening] + _fact_sentences(world, person, groups, d))


def _qa_lines(person: Person, questions: Sequence[tuple[str, str]]) -> str:
  return "\n".join(f"Q: {question.format(name=person.name)}\nA: {getattr(person, attr)}"
                   for attr, question in questions)


def _card(world: World, person: Person, attr: str, d: _Draws) -> str:
  """Two fact sentences about a person, in random order: the one stating `attr` and another."""
  other = d.choice([g for g in range(len(_BIO_FACTS)) if g != _FACT_GROUPS[attr]])
  groups = d.shuffled([_FACT_GROUPS[attr], other])
  return " ".join(_fact_sentences(world, person, groups, d, name_first=True, stating=attr))


def _qa_card(world: World, person: Person, d: _Draws) -> str:
  """A reading card: two facts about a person, a question the card answers, then another.

  The second question is about any other attribute, so it is answered by the card or only by
  the person's biographies (recall). The card fits one 256-byte row, so copying from it is
  rewarded in training; the QA format is learnt from people other than the probe people.
  """
  (attr, question), second = d.sample(_QUESTIONS, 2)
  return _card(world, person, attr, d) + "\n" + _qa_lines(person, [(attr, question), second])


def _bios_doc(config: CorpusConfig, split: str, index: int, d: _Draws) -> dict:
  world = _config_world(config)
  n = len(world.people)
  person_index = world.bio_order[index % n]
  person = world.people[person_index]
  # Train uses versions 0.._BIOS_PER_PERSON-1, validation the next ones.
  version = index // n + (0 if split == "train" else _BIOS_PER_PERSON)
  is_card = split == "train" and person.qa_in_train and version in _QA_VERSIONS
  text = _qa_card(world, person, d) if is_card else _bio_text(world, person, version, d)
  return {"text": text, "format": "qa_card" if is_card else "bio",
          "person": person.pid, "name": person.name,
          "related_people": [world.people[c].pid for c in person.colleagues],
          "city": person.city, "employer": person.employer}


@functools.lru_cache(maxsize=16)
def _probe_people(config: CorpusConfig) -> tuple[int, ...]:
  """People with a train bio and no QA text in train, so that probes ask about known facts."""
  world = _config_world(config)
  seen = world.bio_order[:_counts(config, "train")[DOMAINS.index("bios")]]
  return tuple(p for p in seen if not world.people[p].qa_in_train)


def _answer_pool(world: World, attr: str) -> Sequence[str]:
  return world.employers if attr == "employer" else _ANSWER_POOLS[attr]


def _probe_question(config: CorpusConfig, d: _Draws):
  """(world, probe person, attribute, question) for a bios probe; None without probe people."""
  people = _probe_people(config)
  if not people:
    return None
  world = _config_world(config)
  person = world.people[d.choice(people)]
  attr, question = d.choice(_QUESTIONS)
  return world, person, attr, question.format(name=person.name)


def _bios_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]] | None:
  """Closed book: a question about a fact stated only in the person's train biographies."""
  drawn = _probe_question(config, d)
  if drawn is None:
    return None
  world, person, attr, question = drawn
  answer = getattr(person, attr)
  return f"Q: {question}\nA:", answer, _distractors(d, _answer_pool(world, attr), answer, 3)


def _bios_in_context_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]] | None:
  """In context: a card (as in train QA cards) about a probe person, then its question.

  The distractors are values of the same attribute that the card does not mention, so the probe
  measures reading the answer off the context (as QA cards in train reward), not recall.
  """
  drawn = _probe_question(config, d)
  if drawn is None:
    return None
  world, person, attr, question = drawn
  card = _card(world, person, attr, d)
  answer = getattr(person, attr)
  unmentioned = [v for v in _answer_pool(world, attr) if v not in card]
  return f"{card}\nQ: {question}\nA:", answer, _distractors(d, unmentioned, answer, 3)


# Statement openings that train biographies complete with one attribute (and only that one).
_RELATIONS = {"birth_city": ("{name} comes from",),
              "birth_year": ("{name} was born in {birth_city} in",),
              "university": ("{name} studied at", "{name} graduated from",
                             "{name} earned a degree at"),
              "employer": ("{name} works at",),
              "hobby": ("{name} loves", "{name} is passionate about")}


@functools.lru_cache(maxsize=4)
def _world_names(world: World) -> frozenset[str]:
  return frozenset(p.name for p in world.people)


def _bios_relation_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]] | None:
  """Relation: 'Nafo Tull graduated from' -> a university, against the same new person's city,
  hobby and employer. The person is new (no world name), so the prompt is unseen; what is
  measured is which kind of value each relation of the bios domain takes.
  """
  world = _config_world(config)
  total = math.prod(len(part) for part in _PERSON_NAME_PARTS)
  name = _decode_name(d.below(total), _PERSON_NAME_PARTS)
  if name in _world_names(world):
    return None
  values = {attr: d.choice(_answer_pool(world, attr)) for attr in _RELATIONS}
  attr = d.choice(tuple(_RELATIONS))
  prompt = d.choice(_RELATIONS[attr]).format(name=name, birth_city=values["birth_city"])
  # The year's prompt names the city, so the city is no distractor there.
  others = [a for a in _RELATIONS if a != attr and not (attr == "birth_year" and a == "birth_city")]
  return prompt, values[attr], [values[a] for a in d.sample(others, 3)]


def _distractors(d: _Draws, pool: Sequence[str], answer: str, k: int) -> list[str]:
  """k distinct values from `pool` other than `answer` (pool holds at least k + 1 values)."""
  out = []
  while len(out) < k:
    value = d.choice(pool)
    if value != answer and value not in out:
      out.append(value)
  return out


# ----------------------------------------------------------------------------------------------
# math.

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_MATH_OPS = ("+", "+", "+", "-", "-", "*")  # draw weights: + 1/2, - 1/3, * 1/6
_MATH_HEADERS = ("Practice set:", "Worksheet", "Arithmetic drill", "Exercises:", "Homework",
                 "Quick sums")
_WORD_NAMES = ("Tom", "Ana", "Leo", "Mia", "Sam", "Ivy", "Ben", "Zoe")
_WORD_ITEMS = ("apples", "pens", "coins", "books", "marbles", "stickers", "cards", "shells")
_WORD_PROBLEMS = {
    "+": "{who} has {a} {item} and gets {b} more. How many {item} does {who} have now? Answer: {c}",
    "-": "{who} has {a} {item} and gives away {b}. How many {item} are left? Answer: {c}",
    "*": "{who} buys {a} bags with {b} {item} in each bag. How many {item} is that? Answer: {c}",
}


def _all_facts() -> list[tuple[str, int, int]]:
  """Every (op, a, b): 0-99 for + and - (a >= b, so no negatives), 0-12 for *."""
  return ([("+", a, b) for a in range(100) for b in range(100)]
          + [("-", a, b) for a in range(100) for b in range(a + 1)]
          + [("*", a, b) for a in range(13) for b in range(13)])


@functools.lru_cache(maxsize=8)
def _math_facts(seed: int) -> dict[str, dict[str, tuple]]:
  """split -> op -> (a, b) pairs; a fact belongs to one split in every format."""
  table = _split_table(seed, "math", _all_facts(), lambda f: f"{f[1]} {f[0]} {f[2]}")
  return {split: {op: tuple((a, b) for o, a, b in facts if o == op) for op in _ARITH}
          for split, facts in table.items()}


def _fact(facts: dict[str, tuple], d: _Draws) -> tuple[str, int, int, int]:
  op = d.choice(_MATH_OPS)
  a, b = d.choice(facts[op])
  return op, a, b, _ARITH[op](a, b)


def _equation_line(facts, d: _Draws) -> str:
  return "{1} {0} {2} = {3}".format(*_fact(facts, d))


def _qa_line(facts, d: _Draws) -> str:
  return "Q: {1} {0} {2} = {3}".format(*_fact(facts, d))


def _word_problem(facts, d: _Draws) -> str:
  op, a, b, c = _fact(facts, d)
  return _WORD_PROBLEMS[op].format(who=d.choice(_WORD_NAMES), item=d.choice(_WORD_ITEMS),
                                   a=a, b=b, c=c)


def _mixed_line(facts, d: _Draws) -> str:
  return d.choice(_MATH_LINES)(facts, d)


_MATH_LINES = (_equation_line, _qa_line, _word_problem)
_MATH_STYLES = _MATH_LINES + (_mixed_line,)


def _math_doc(config: CorpusConfig, split: str, index: int, d: _Draws) -> dict:
  facts = _math_facts(config.seed)[split]
  style = d.choice(_MATH_STYLES)
  lines = [d.choice(_MATH_HEADERS)] if d.chance(0.4) else []
  lines += _fill(d, lambda: style(facts, d), 100)
  return {"text": "\n".join(lines)}


def _numeric_distractors(d: _Draws, value: int, k: int, minimum: int | None) -> list[str]:
  """k distinct near misses of `value` (off by 1, 2, 3 or 10), none below `minimum`."""
  offsets = [o for o in (1, -1, 2, -2, 3, -3, 10, -10) if minimum is None or value + o >= minimum]
  return [str(value + o) for o in d.sample(offsets, k)]


def _math_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]]:
  op, a, b, c = _fact(_math_facts(config.seed)["probe"], d)
  return f"Q: {a} {op} {b} =", str(c), _numeric_distractors(d, c, 3, minimum=0)


def _math_magnitude_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]] | None:
  """Magnitude: 'Q: 44 + 7 =' -> ' 51' then the line's end, against ' 5', ' 513' and ' 5139'.

  Distractors share the answer's leading digits and differ only in how many digits there are,
  so the probe measures estimating a held-out result's size, not exact arithmetic. Candidates
  end with the newline that ends every train line, which is what tells ' 5' from ' 51'.
  """
  op, a, b, c = _fact(_math_facts(config.seed)["probe"], d)
  digits = str(c)
  if digits == "0":  # its longer neighbours would need a leading zero
    return None
  lengths = [n for n in range(1, len(digits) + 4) if n != len(digits)][:3]
  others = [digits[:n] if n < len(digits)
            else digits + "".join(str(d.below(10)) for _ in range(n - len(digits)))
            for n in lengths]
  return f"Q: {a} {op} {b} =", digits + "\n", [o + "\n" for o in others]


# ----------------------------------------------------------------------------------------------
# code.

# No variable name ends another, so a program line never hides inside a longer one.
_VARS = ("a", "b", "c", "n", "m", "k", "x", "y", "z", "total", "count", "score", "width",
         "height", "speed", "price")
_FUNCS = ("f", "g", "bump", "step", "scale", "shift")
_ARGS = ("x", "n", "v")
_LISTS = ("xs", "nums", "vals", "items")
_REDUCERS = {"sum": sum, "max": max, "min": min, "len": len}


# Each program below is self-contained while none of its proper suffixes is (each later line
# reads a variable set earlier), so a held-out program cannot appear as the tail of a train one.
def _prog_chain(d: _Draws) -> tuple[str, int]:
  a, b = d.sample(_VARS, 2)
  x, y, op = d.between(0, 20), d.between(1, 9), d.choice(tuple(_ARITH))
  return f"{a} = {x}\n{b} = {a} {op} {y}\nprint({b})", _ARITH[op](x, y)


def _prog_three(d: _Draws) -> tuple[str, int]:
  a, b, c = d.sample(_VARS, 3)
  x, y, z = d.between(0, 12), d.between(0, 12), d.between(1, 9)
  op, op2 = d.choice(tuple(_ARITH)), d.choice(("+", "-"))
  value = _ARITH[op2](_ARITH[op](x, y), z)
  return f"{a} = {x}\n{b} = {y}\n{c} = {a} {op} {b}\nprint({c} {op2} {z})", value


def _prog_loop(d: _Draws) -> tuple[str, int]:
  t = d.choice(_VARS)
  start, times, step, op = d.between(0, 10), d.between(2, 5), d.between(1, 5), d.choice(("+", "-"))
  text = f"{t} = {start}\nfor i in range({times}):\n    {t} = {t} {op} {step}\nprint({t})"
  return text, _ARITH[op](start, times * step)


def _prog_branch(d: _Draws) -> tuple[str, int]:
  a = d.choice(_VARS)
  x, limit, bonus = d.between(0, 20), d.between(0, 20), d.between(1, 9)
  text = (f"{a} = {x}\nif {a} > {limit}:\n    print({a} - {limit})\n"
          f"else:\n    print({a} + {bonus})")
  return text, x - limit if x > limit else x + bonus


def _prog_function(d: _Draws) -> tuple[str, int]:
  f, arg = d.choice(_FUNCS), d.choice(_ARGS)
  k, x, op = d.between(1, 9), d.between(0, 12), d.choice(tuple(_ARITH))
  return f"def {f}({arg}):\n    return {arg} {op} {k}\nprint({f}({x}))", _ARITH[op](x, k)


def _prog_list(d: _Draws) -> tuple[str, int]:
  name, reducer = d.choice(_LISTS), d.choice(tuple(_REDUCERS))
  values = [d.between(0, 20) for _ in range(d.between(2, 5))]
  return f"{name} = {values}\nprint({reducer}({name}))", _REDUCERS[reducer](values)


_PROGRAMS = (_prog_chain, _prog_three, _prog_loop, _prog_branch, _prog_function, _prog_list)


def _program(seed: int, split: str, d: _Draws) -> tuple[str, int]:
  """A program owned by `split` (rejection sampling on its held-out bucket)."""
  while True:
    text, value = d.choice(_PROGRAMS)(d)
    if _heldout_split(seed, "code", text) == split:
      return text, value


def _code_doc(config: CorpusConfig, split: str, index: int, d: _Draws) -> dict:
  def snippet():
    text, value = _program(config.seed, split, d)
    return f"{text}\n# output: {value}"
  return {"text": "\n\n".join(_fill(d, snippet, 100))}


def _code_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]]:
  text, value = _program(config.seed, "probe", d)
  return f"{text}\n# output:", str(value), _numeric_distractors(d, value, 3, minimum=None)


# ----------------------------------------------------------------------------------------------
# prose: a small probabilistic grammar with subject-verb agreement.

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
def _noun_pairs(seed: int) -> dict[str, tuple[tuple[int, int], ...]]:
  """split -> (subject noun, attractor noun) pairs that split may put in 'The N1 near the N2'."""
  pairs = list(itertools.permutations(range(len(_NOUNS)), 2))
  return _split_table(seed, "prose", pairs, lambda p: f"{_NOUNS[p[0]][0]}|{_NOUNS[p[1]][0]}")


def _noun_phrase(d: _Draws) -> tuple[str, bool]:
  """('the [adjective] noun', plural?); these never take a prepositional phrase."""
  forms, plural = d.choice(_NOUNS), d.chance(0.5)
  adjective = d.choice(_ADJECTIVES) + " " if d.chance(0.4) else ""
  return f"the {adjective}{forms[plural]}", plural


def _verb_phrase(d: _Draws, plural: bool) -> str:
  if d.chance(0.5):
    return f"{d.choice(_INTRANSITIVE)[plural]} {d.choice(_ADVERBS)}"
  return f"{d.choice(_TRANSITIVE)[plural]} {_noun_phrase(d)[0]}"


def _clause(d: _Draws) -> str:
  subject, plural = _noun_phrase(d)
  return f"{subject} {_verb_phrase(d, plural)}"


def _attractor_clause(d: _Draws, pairs: Sequence[tuple[int, int]]) -> str:
  """'the dogs near the house run quickly': the verb agrees with the first noun."""
  subject, attractor = d.choice(pairs)
  plural = d.chance(0.5)
  return (f"the {_NOUNS[subject][plural]} {d.choice(_PREPOSITIONS)} the "
          f"{_NOUNS[attractor][d.chance(0.5)]} {_verb_phrase(d, plural)}")


def _prose_sentence(d: _Draws, pairs: Sequence[tuple[int, int]]) -> str:
  kind = d.below(6)
  if kind == 0:
    text = _attractor_clause(d, pairs)
  elif kind == 1:
    (first, _), (second, _) = _noun_phrase(d), _noun_phrase(d)
    text = f"{first} and {second} {_verb_phrase(d, True)}"
  elif kind == 2:
    text = f"{_clause(d)} because {_clause(d)}"
  elif kind == 3:
    text = f"when {_clause(d)}, {_clause(d)}"
  else:
    text = _clause(d)
  return _sentence(text) + "."


def _prose_doc(config: CorpusConfig, split: str, index: int, d: _Draws) -> dict:
  # The first sentence always uses a noun pair owned by `split`, so splits never share a text.
  pairs = _noun_pairs(config.seed)[split]
  first = _sentence(_attractor_clause(d, pairs)) + "."
  body = " ".join([first] + _fill(d, lambda: _prose_sentence(d, pairs), 60))
  return {"text": f"{d.choice(_PROSE_TITLES)}\n{body}" if d.chance(0.3) else body}


def _prose_agreement_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]]:
  """'The old dogs' -> ' run' vs ' runs': agreement with an adjacent subject (no attractor).

  Every such prompt occurs in train (there are few nouns); what is measured is whether the
  verb's number follows the subject's, the rule `_prose_probe` then tests under an attractor.
  """
  del config  # the grammar is the same for every config
  forms, plural = d.choice(_NOUNS), d.chance(0.5)
  adjective = d.choice(_ADJECTIVES) + " " if d.chance(0.5) else ""
  verb = d.choice(_VERBS)
  return f"The {adjective}{forms[plural]}", verb[plural], [verb[not plural]]


def _prose_probe(config: CorpusConfig, d: _Draws) -> tuple[str, str, list[str]]:
  """'The dogs near the house' -> ' run' vs ' runs': the attractor has the other number."""
  subject, attractor = d.choice(_noun_pairs(config.seed)["probe"])
  plural = d.chance(0.5)
  forms = d.choice(_VERBS)
  prompt = (f"The {_NOUNS[subject][plural]} {d.choice(_PREPOSITIONS)} "
            f"the {_NOUNS[attractor][not plural]}")
  return prompt, forms[plural], [forms[not plural]]


# ----------------------------------------------------------------------------------------------
# web: boilerplate, noise and fragments of every topic.

_NAV_ITEMS = ("Home", "News", "About", "Blog", "Shop", "Contact", "Login", "Sign up", "FAQ",
              "Careers", "Events", "Forum")
_COOKIE_BANNERS = (
    "We use cookies to improve your experience. Accept all cookies?",
    "This site uses cookies. By continuing to browse you agree to our use of cookies.",
    "Cookie settings | Accept | Reject",
    "We value your privacy. Click OK to accept cookies and continue.")
_TOPICS = ("restaurants", "hotels", "museums", "jobs", "apartments", "concerts", "parks",
           "coffee shops", "startups", "schools")
_WEB_WORDS = ("cloud", "pixel", "data", "fast", "smart", "web", "node", "stack", "byte", "quick",
              "green", "home", "micro", "open", "zen", "blue")
_CODE_BITS = ("npm install {w}-{v}", "pip install {w}{v}", "Error: {w} is not defined",
              "<div class=\"{w}-{v}\">", "console.log({w});", "import {w}", "print({w})",
              "404 Not Found: /{w}/{v}.html", "def {w}_{v}():")
_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _junk_token(d: _Draws) -> str:
  return "".join(d.choice(_LETTERS) for _ in range(d.between(3, 7)))


def _web_headline(config: CorpusConfig, d: _Draws) -> str:
  year = d.between(2005, 2024)
  return f"Top {d.between(3, 20)} {d.choice(_TOPICS)} in {d.choice(_CITIES)} ({year})"


def _web_person(config: CorpusConfig, d: _Draws) -> str:
  person = d.choice(_config_world(config).people)
  return (f"{person.name} of {person.employer} in {person.city} shared "
          f"{d.between(2, 9)} tips about {d.choice(_TOPICS)}.")


def _web_deal(config: CorpusConfig, d: _Draws) -> str:
  return (f"Only ${d.between(5, 99)}.99 - save {d.between(10, 70)}% today!!! "
          f"Free shipping on orders over ${d.between(20, 200)}.")


def _web_code(config: CorpusConfig, d: _Draws) -> str:
  return d.choice(_CODE_BITS).format(w=d.choice(_WEB_WORDS), v=d.choice(_WEB_WORDS))


def _web_meta(config: CorpusConfig, d: _Draws) -> str:
  return (f"Posted by user{d.between(1, 99999)} on {d.between(2005, 2024)}-"
          f"{d.between(1, 12):02d}-{d.between(1, 28):02d} | {d.below(300)} comments")


def _web_contact(config: CorpusConfig, d: _Draws) -> str:
  return (f"Call {d.between(200, 999)}-{d.between(1000, 9999)} or email "
          f"info@{d.choice(_WEB_WORDS)}{d.choice(_WEB_WORDS)}.com")


def _web_prose(config: CorpusConfig, d: _Draws) -> str:
  return _prose_sentence(d, _noun_pairs(config.seed)["train"])


def _web_junk(config: CorpusConfig, d: _Draws) -> str:
  return " ".join(_junk_token(d) for _ in range(d.between(2, 6)))


_WEB_FRAGMENTS = (_web_headline, _web_person, _web_deal, _web_code, _web_meta, _web_contact,
                  _web_prose, _web_junk)


def _web_footer(world: World, d: _Draws) -> str:
  owner = d.choice(world.employers)
  if d.chance(0.5):
    return f"Copyright {d.between(1998, 2024)} {owner}. All rights reserved."
  return f"(c) {d.between(1998, 2024)} {owner} | Privacy | Terms"


def _typos(d: _Draws, text: str, count: int) -> str:
  """Swaps `count` random pairs of adjacent letters."""
  chars = list(text)
  for _ in range(count):
    i = d.below(len(chars) - 1)
    if chars[i].isalpha() and chars[i + 1].isalpha():
      chars[i], chars[i + 1] = chars[i + 1], chars[i]
  return "".join(chars)


def _web_doc(config: CorpusConfig, split: str, index: int, d: _Draws) -> dict:
  world = _config_world(config)
  lines = [" | ".join(d.sample(_NAV_ITEMS, d.between(3, 6)))] if d.chance(0.7) else []
  if d.chance(0.4):
    lines.append(d.choice(_COOKIE_BANNERS))
  lines += _fill(d, lambda: d.choice(_WEB_FRAGMENTS)(config, d), 80, 350)  # + header, footer
  lines.append(_web_footer(world, d))
  return {"text": _typos(d, "\n".join(lines), d.below(4))}


# ----------------------------------------------------------------------------------------------
# The public API.

_GENERATORS = {"web": _web_doc, "bios": _bios_doc, "math": _math_doc, "code": _code_doc,
               "prose": _prose_doc}
# domain -> {probe kind: maker}. The first kind of each domain is its hard, held-out probe (the
# one the metric `probe/<domain>/<kind>/accuracy` of earlier runs measured under the plain
# domain name); the others are easier tiers that a quickstart-size model can already pass.
PROBE_KINDS = {"bios": {"closed_book": _bios_probe, "in_context": _bios_in_context_probe,
                        "relation": _bios_relation_probe},
               "math": {"arithmetic": _math_probe, "magnitude": _math_magnitude_probe},
               "code": {"output": _code_probe},
               "prose": {"attractor": _prose_probe, "agreement": _prose_agreement_probe}}


def document(config: CorpusConfig, split: str, domain: str, index: int) -> dict:
  """Document `index` of `domain` in `split`: {"id", "domain", "text", ...domain fields}.

  bios documents add "person" (id), "name", "related_people" (ids of the colleagues named in
  the text: same employer and city), "city" (where the person works) and "employer". A bios
  doc is a biography, or for half of the people one QA sheet ("Q: ...\nA: ...") in train.
  """
  _check_name("domain", domain, DOMAINS)
  count = _counts(config, split)[DOMAINS.index(domain)]
  if not 0 <= index < count:
    raise IndexError(f"{domain}/{split} has {count} documents; index {index} is out of range.")
  record = {"id": f"{domain}-{split}-{index:06d}", "domain": domain}
  record.update(_GENERATORS[domain](config, split, index, _draws(config, domain, split, index)))
  return record


def iter_documents(config: CorpusConfig, split: str = "train",
                   domain: str | None = None) -> Iterator[dict]:
  """Every document of `split`, domain by domain (DOMAINS order), or of one `domain`."""
  domains = DOMAINS if domain is None else (domain,)
  for name in domains:
    _check_name("domain", name, DOMAINS)
    for index in range(domain_counts(config, split)[name]):
      yield document(config, split, name, index)


@functools.lru_cache(maxsize=32)
def _probes(config: CorpusConfig, domain: str, kind: str) -> tuple[dict, ...]:
  """Up to num_probes probes of one kind with distinct prompts, from the kind's own stream."""
  kinds = list(PROBE_KINDS[domain])
  made, seen = [], set()
  for k in range(_PROBE_TRIES * config.num_probes):
    if len(made) == config.num_probes:
      break
    # The first kind keeps the key it had before kinds existed, so its probes did not change.
    d = _draws(config, domain, "probe", k) if kind == kinds[0] else _Draws(
        (config.seed, DOMAINS.index(domain), _STREAMS["probe"], kinds.index(kind), k))
    probe = PROBE_KINDS[domain][kind](config, d)
    if probe is None or probe[0] in seen:
      continue
    prompt, answer, distractors = probe
    seen.add(prompt)
    made.append({"id": f"{domain}-{kind}-{len(made):05d}", "domain": domain, "kind": kind,
                 "prompt": prompt, "answer": " " + answer,
                 "candidates": d.shuffled([" " + c for c in [answer] + distractors])})
  if len(made) < config.num_probes:
    logging.warning("Only %d distinct %s/%s probes exist for this config (asked for %d); raise "
                    "num_docs or the %s weight, or lower num_probes.", len(made), domain, kind,
                    config.num_probes, domain)
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
  _check_name("domain", domain, DOMAINS)
  if domain not in PROBE_DOMAINS:
    return []
  kinds = list(PROBE_KINDS[domain]) if kind is None else [kind]
  for name in kinds:
    _check_name(f"{domain} probe kind", name, list(PROBE_KINDS[domain]))
  return [dict(p, candidates=list(p["candidates"]))
          for name in kinds for p in _probes(config, domain, name)]


def _check_out_dir(out_dir: pathlib.Path) -> None:
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f"Output path {str(out_dir)!r} is a file; pass a directory for --out "
                     "(it is created if missing).")


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
      for domain in DOMAINS:
        _write_jsonl(out / split / f"{domain}.jsonl",
                     iter_documents(config, split, domain), progress)
  probe_counts, probe_chance = {}, {}
  for domain in PROBE_DOMAINS:
    records = probes(config, domain)
    probe_counts[domain] = {kind: sum(r["kind"] == kind for r in records)
                            for kind in PROBE_KINDS[domain]}
    probe_chance[domain] = 1 / len(records[0]["candidates"]) if records else None
    _write_jsonl(out / "probes" / f"{domain}.jsonl", records)
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
  args = parser.parse_args(argv)
  try:
    config = CorpusConfig(
        num_docs=args.docs, seed=args.seed, validation_fraction=args.validation_fraction,
        num_probes=args.probes,
        domain_weights=_parse_weights(args.weights) if args.weights else DEFAULT_WEIGHTS)
    _check_out_dir(pathlib.Path(args.out))
  except ValueError as e:
    parser.error(str(e))
  manifest = write_corpus(args.out, config)
  print(json.dumps({"out": args.out, **manifest["counts"]}))
  return manifest


if __name__ == "__main__":
  main()
