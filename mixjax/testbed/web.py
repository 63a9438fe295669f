"""web: the large, noisy, low-information domain: boilerplate, typos and fragments of every
topic (the world's people and employers, prose sentences). It has no probes."""

from mixjax.testbed import config as config_lib
from mixjax.testbed import draws
from mixjax.testbed import prose
from mixjax.testbed import registry
from mixjax.testbed import text
from mixjax.testbed import world as world_lib

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
Config = config_lib.CorpusConfig


def _junk_token(d: draws.Draws) -> str:
  return "".join(d.choice(_LETTERS) for _ in range(d.between(3, 7)))


def _web_headline(config: Config, d: draws.Draws) -> str:
  year = d.between(2005, 2024)
  return f"Top {d.between(3, 20)} {d.choice(_TOPICS)} in {d.choice(world_lib.CITIES)} ({year})"


def _web_person(config: Config, d: draws.Draws) -> str:
  person = d.choice(world_lib.config_world(config).people)
  return (f"{person.name} of {person.employer} in {person.city} shared "
          f"{d.between(2, 9)} tips about {d.choice(_TOPICS)}.")


def _web_deal(config: Config, d: draws.Draws) -> str:
  return (f"Only ${d.between(5, 99)}.99 - save {d.between(10, 70)}% today!!! "
          f"Free shipping on orders over ${d.between(20, 200)}.")


def _web_code(config: Config, d: draws.Draws) -> str:
  return d.choice(_CODE_BITS).format(w=d.choice(_WEB_WORDS), v=d.choice(_WEB_WORDS))


def _web_meta(config: Config, d: draws.Draws) -> str:
  return (f"Posted by user{d.between(1, 99999)} on {d.between(2005, 2024)}-"
          f"{d.between(1, 12):02d}-{d.between(1, 28):02d} | {d.below(300)} comments")


def _web_contact(config: Config, d: draws.Draws) -> str:
  return (f"Call {d.between(200, 999)}-{d.between(1000, 9999)} or email "
          f"info@{d.choice(_WEB_WORDS)}{d.choice(_WEB_WORDS)}.com")


def _web_prose(config: Config, d: draws.Draws) -> str:
  return prose.sentence(d, prose.noun_pairs(config.seed)["train"])


def _web_junk(config: Config, d: draws.Draws) -> str:
  return " ".join(_junk_token(d) for _ in range(d.between(2, 6)))


_WEB_FRAGMENTS = (_web_headline, _web_person, _web_deal, _web_code, _web_meta, _web_contact,
                  _web_prose, _web_junk)


def _web_footer(world: world_lib.World, d: draws.Draws) -> str:
  owner = d.choice(world.employers)
  if d.chance(0.5):
    return f"Copyright {d.between(1998, 2024)} {owner}. All rights reserved."
  return f"(c) {d.between(1998, 2024)} {owner} | Privacy | Terms"


def _typos(d: draws.Draws, page: str, count: int) -> str:
  """Returns `page` with `count` random pairs of adjacent letters swapped."""
  chars = list(page)
  for _ in range(count):
    i = d.below(len(chars) - 1)
    if chars[i].isalpha() and chars[i + 1].isalpha():
      chars[i], chars[i + 1] = chars[i + 1], chars[i]
  return "".join(chars)


def _document(config: Config, split: str, index: int, d: draws.Draws) -> dict:
  """Returns {"text"}: navigation, a cookie banner, fragments and a footer, with typos."""
  world = world_lib.config_world(config)
  lines = [" | ".join(d.sample(_NAV_ITEMS, d.between(3, 6)))] if d.chance(0.7) else []
  if d.chance(0.4):
    lines.append(d.choice(_COOKIE_BANNERS))
  lines += text.fill(d, lambda: d.choice(_WEB_FRAGMENTS)(config, d), 80, 350)  # + header, footer
  lines.append(_web_footer(world, d))
  return {"text": _typos(d, "\n".join(lines), d.below(4))}


# The explicit stream key is the historical one (its list position), which keeps the corpus
# byte-identical to earlier runs and recorded results.
DOMAIN = registry.Domain("web", _document, stream_key=0)
