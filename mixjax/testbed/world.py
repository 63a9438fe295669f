"""The world shared by bios and web: people, employers and who works with whom.

A pure function of (seed, number of people), drawn once from its own stream and cached; the
number of people follows the bios domain's train count.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence

from mixjax.testbed import config as config_lib
from mixjax.testbed import draws
from mixjax.testbed import keys

BIOS_PER_PERSON = 3  # train bios per person; sets the population size
_MIN_PEOPLE = 100  # enough probe people for 200 bios probes even in tiny corpora

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "qu")
_CAP_ONSETS = tuple(o.capitalize() for o in _ONSETS)
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("ll", "nn", "rr", "ck", "ss", "nd", "rk", "lt", "rn", "ld", "x", "m", "n", "s", "t", "sh")
_STEM_ENDS = ("x", "ra", "n", "nix", "lex", "tor", "via", "rum")
_COMPANY_KINDS = ("Labs", "Systems", "Works", "Group", "Dynamics", "Foods", "Media", "Motors",
                  "Health", "Bank", "Logistics", "Studios")
# "Mara Quell": CVCV first name, CVC last name (about 9M names).
PERSON_NAME_PARTS = (_CAP_ONSETS, _VOWELS, _ONSETS, _VOWELS, (" ",), _CAP_ONSETS, _VOWELS, _CODAS)
# "Bamonix Labs" (about 870k names).
_EMPLOYER_PARTS = (_CAP_ONSETS, _VOWELS, _ONSETS, _VOWELS, _STEM_ENDS, (" ",), _COMPANY_KINDS)

CITIES = tuple("""Lisbon Porto Madrid Seville Paris Lyon Berlin Munich Hamburg Vienna Prague Warsaw
    Krakow Budapest Rome Milan Naples Turin Athens Oslo Bergen Stockholm Helsinki Copenhagen Dublin
    London Leeds Glasgow Edinburgh Amsterdam Utrecht Brussels Zurich Geneva Toronto Montreal Boston
    Chicago Denver Seattle Austin Lima Bogota Santiago Quito Nairobi Lagos Cairo Tunis Mumbai Delhi
    Chennai Jakarta Manila Seoul Osaka Kyoto Sydney Perth Auckland""".split())
UNIVERSITIES = ("Northfield University", "Harlow Institute of Technology", "Westbrook College",
                "Ashford University", "Kingsgate University", "Riverton Polytechnic",
                "Elmwood College", "Stonebridge University", "Lakeshore Institute",
                "Greyhaven University", "Oakridge College", "Silverpine University",
                "Brightwater Academy", "Redcliff University", "Marlow School of Arts",
                "Fairview Institute")
JOBS = tuple("""engineer architect nurse teacher chemist pilot accountant designer journalist
    librarian baker lawyer physician geologist translator electrician photographer economist
    carpenter pharmacist analyst programmer musician surveyor""".split())
HOBBIES = ("playing chess", "hiking", "painting", "gardening", "cycling", "baking bread",
           "bird watching", "rock climbing", "knitting", "sailing", "playing the violin",
           "swimming", "pottery", "photography", "fishing", "reading poetry", "running marathons",
           "collecting stamps", "playing tennis", "woodworking")
BIRTH_YEARS = tuple(str(y) for y in range(1950, 2003))


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


def _unique_names(d: draws.Draws, n: int, parts: Sequence[Sequence[str]]) -> list[str]:
  """n distinct concatenations of one string from each of `parts`."""
  total = math.prod(len(p) for p in parts)
  if n > total // 2:  # rejection sampling below stays fast while half the names are free
    raise ValueError(f"Asked for {n} distinct names but only {total // 2} can be drawn; lower "
                     "num_docs or the bios weight.")
  codes = {}  # an insertion-ordered set
  while len(codes) < n:
    codes[d.below(total)] = None
  return [decode_name(code, parts) for code in codes]


def decode_name(code: int, parts: Sequence[Sequence[str]]) -> str:
  """Returns the name numbered `code` in the mixed-radix product of `parts`."""
  pieces = []
  for part in reversed(parts):
    code, i = divmod(code, len(part))
    pieces.append(part[i])
  return "".join(reversed(pieces))


def _colleague_groups(d: draws.Draws, n: int) -> list[list[int]]:
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
  """Returns the population: a pure function of (seed, num_people)."""
  d = draws.Draws(keys.world_key(seed, num_people))
  names = _unique_names(d, num_people, PERSON_NAME_PARTS)
  groups = _colleague_groups(d, num_people)
  employers = _unique_names(d, len(groups), _EMPLOYER_PARTS)
  people = [None] * num_people
  for employer, members in zip(employers, groups):
    city = d.choice(CITIES)
    for i in members:
      people[i] = Person(
          pid=f"person-{i:06d}", name=names[i], pronoun=d.choice(("he", "she")),
          birth_city=d.choice(CITIES), birth_year=d.choice(BIRTH_YEARS),
          university=d.choice(UNIVERSITIES), job=d.choice(JOBS), hobby=d.choice(HOBBIES),
          employer=employer, city=city, colleagues=tuple(m for m in members if m != i),
          qa_in_train=d.chance(0.5))
  return World(tuple(people), tuple(employers), tuple(d.shuffled(range(num_people))))


def config_world(config: config_lib.CorpusConfig) -> World:
  """Returns the world for `config`: about one person per three train bios."""
  bios = config_lib.domain_counts(config, "train")["bios"]
  return _world(config.seed, max(_MIN_PEOPLE, -(-bios // BIOS_PER_PERSON)))
