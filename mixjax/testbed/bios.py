"""bios: biographies of the world's linked people (colleagues name each other), QA cards in
train for half of them, and probes about the other half's facts."""

import functools
import math
from collections.abc import Sequence

from mixjax.testbed import config as config_lib
from mixjax.testbed import draws
from mixjax.testbed import registry
from mixjax.testbed import text
from mixjax.testbed import world as world_lib

_QA_VERSIONS = (1,)  # a QA person's train bio number 1 is a QA card instead of a biography

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
_ANSWER_POOLS = {"birth_city": world_lib.CITIES, "birth_year": world_lib.BIRTH_YEARS,
                 "university": world_lib.UNIVERSITIES, "job": world_lib.JOBS,
                 "hobby": world_lib.HOBBIES}
# Statement openings that train biographies complete with one attribute (and only that one).
_RELATIONS = {"birth_city": ("{name} comes from",),
              "birth_year": ("{name} was born in {birth_city} in",),
              "university": ("{name} studied at", "{name} graduated from",
                             "{name} earned a degree at"),
              "employer": ("{name} works at",),
              "hobby": ("{name} loves", "{name} is passionate about")}

def _bio_fields(world: world_lib.World, person: world_lib.Person) -> dict[str, str]:
  """Template fields of a person (dataclasses.asdict would cost more than the whole bio)."""
  return {"name": person.name, "pron": person.pronoun,
          "poss": "his" if person.pronoun == "he" else "her", "job_a": text.article(person.job),
          "city": person.city, "birth_city": person.birth_city,
          "birth_year": person.birth_year, "university": person.university,
          "employer": person.employer, "hobby": person.hobby,
          "colleagues": text.join_names([world.people[c].name for c in person.colleagues])}


def _fact_sentences(world: world_lib.World, person: world_lib.Person, groups: Sequence[int],
                    d: draws.Draws, name_first: bool = False,
                    stating: str | None = None) -> list[str]:
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
    sentences.append(text.sentence(d.choice(variants).format(subj=subj, **fields)))
  return sentences


def _bio_text(world: world_lib.World, person: world_lib.Person, version: int,
              d: draws.Draws) -> str:
  """An opening chosen by `version`, then the facts in random order and wording."""
  opening = _OPENINGS[version].format(**_bio_fields(world, person))
  groups = d.shuffled(range(len(_BIO_FACTS)))
  return " ".join([opening] + _fact_sentences(world, person, groups, d))


def _qa_lines(person: world_lib.Person, questions: Sequence[tuple[str, str]]) -> str:
  return "\n".join(f"Q: {question.format(name=person.name)}\nA: {getattr(person, attr)}"
                   for attr, question in questions)


def _card(world: world_lib.World, person: world_lib.Person, attr: str, d: draws.Draws) -> str:
  """Two fact sentences about a person, in random order: the one stating `attr` and another."""
  other = d.choice([g for g in range(len(_BIO_FACTS)) if g != _FACT_GROUPS[attr]])
  groups = d.shuffled([_FACT_GROUPS[attr], other])
  return " ".join(_fact_sentences(world, person, groups, d, name_first=True, stating=attr))


def _qa_card(world: world_lib.World, person: world_lib.Person, d: draws.Draws) -> str:
  """A reading card: two facts about a person, a question the card answers, then another.

  The second question is about any other attribute, so it is answered by the card or only by
  the person's biographies (recall). The card fits one 256-byte row, so copying from it is
  rewarded in training; the QA format is learnt from people other than the probe people.
  """
  (attr, question), second = d.sample(_QUESTIONS, 2)
  return _card(world, person, attr, d) + "\n" + _qa_lines(person, [(attr, question), second])


def _document(config: config_lib.CorpusConfig, split: str, index: int, d: draws.Draws) -> dict:
  """Returns a biography (or a train QA card) and the person's ids, employer and city."""
  world = world_lib.config_world(config)
  n = len(world.people)
  person_index = world.bio_order[index % n]
  person = world.people[person_index]
  # Train uses versions 0..BIOS_PER_PERSON-1, validation the next ones.
  version = index // n + (0 if split == "train" else world_lib.BIOS_PER_PERSON)
  is_card = split == "train" and person.qa_in_train and version in _QA_VERSIONS
  body = _qa_card(world, person, d) if is_card else _bio_text(world, person, version, d)
  return {"text": body, "format": "qa_card" if is_card else "bio",
          "person": person.pid, "name": person.name,
          "related_people": [world.people[c].pid for c in person.colleagues],
          "city": person.city, "employer": person.employer}


@functools.lru_cache(maxsize=16)
def _probe_people(config: config_lib.CorpusConfig) -> tuple[int, ...]:
  """People with a train bio and no QA text in train, so that probes ask about known facts."""
  world = world_lib.config_world(config)
  seen = world.bio_order[:config_lib.domain_counts(config, "train")["bios"]]
  return tuple(p for p in seen if not world.people[p].qa_in_train)


def _answer_pool(world: world_lib.World, attr: str) -> Sequence[str]:
  return world.employers if attr == "employer" else _ANSWER_POOLS[attr]


def _distractors(d: draws.Draws, pool: Sequence[str], answer: str, k: int) -> list[str]:
  """k distinct values from `pool` other than `answer` (pool holds at least k + 1 values)."""
  out = []
  while len(out) < k:
    value = d.choice(pool)
    if value != answer and value not in out:
      out.append(value)
  return out


def _probe_question(config: config_lib.CorpusConfig, d: draws.Draws):
  """(world, probe person, attribute, question) for a bios probe; None without probe people."""
  people = _probe_people(config)
  if not people:
    return None
  world = world_lib.config_world(config)
  person = world.people[d.choice(people)]
  attr, question = d.choice(_QUESTIONS)
  return world, person, attr, question.format(name=person.name)


def _closed_book_probe(config: config_lib.CorpusConfig,
                       d: draws.Draws) -> tuple[str, str, list[str]] | None:
  """Closed book: a question about a fact stated only in the person's train biographies."""
  drawn = _probe_question(config, d)
  if drawn is None:
    return None
  world, person, attr, question = drawn
  answer = getattr(person, attr)
  return f"Q: {question}\nA:", answer, _distractors(d, _answer_pool(world, attr), answer, 3)


def _in_context_probe(config: config_lib.CorpusConfig,
                      d: draws.Draws) -> tuple[str, str, list[str]] | None:
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


@functools.lru_cache(maxsize=4)
def _world_names(world: world_lib.World) -> frozenset[str]:
  return frozenset(p.name for p in world.people)


def _relation_probe(config: config_lib.CorpusConfig,
                    d: draws.Draws) -> tuple[str, str, list[str]] | None:
  """Relation: 'Nafo Tull graduated from' -> a university, against the same new person's city,
  hobby and employer. The person is new (no world name), so the prompt is unseen; what is
  measured is which kind of value each relation of the bios domain takes.
  """
  world = world_lib.config_world(config)
  total = math.prod(len(part) for part in world_lib.PERSON_NAME_PARTS)
  name = world_lib.decode_name(d.below(total), world_lib.PERSON_NAME_PARTS)
  if name in _world_names(world):
    return None
  values = {attr: d.choice(_answer_pool(world, attr)) for attr in _RELATIONS}
  attr = d.choice(tuple(_RELATIONS))
  prompt = d.choice(_RELATIONS[attr]).format(name=name, birth_city=values["birth_city"])
  # The year's prompt names the city, so the city is no distractor there.
  others = [a for a in _RELATIONS if a != attr and not (attr == "birth_year" and a == "birth_city")]
  return prompt, values[attr], [values[a] for a in d.sample(others, 3)]


# The explicit stream keys are the historical ones (list positions), which keep the corpus
# byte-identical to earlier runs and recorded results.
DOMAIN = registry.Domain("bios", _document, stream_key=1, probe_kinds=(
    registry.ProbeKind("closed_book", _closed_book_probe, plain_stream=True),
    registry.ProbeKind("in_context", _in_context_probe, stream_key=1),
    registry.ProbeKind("relation", _relation_probe, stream_key=2)))
