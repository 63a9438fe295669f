"""math: arithmetic facts as equations, QA lines and word problems; held-out facts as probes.

A fact (op, a, b) belongs to one split in every format, so a probe fact never occurs in train.
"""

import functools

from mixjax.testbed import config as config_lib
from mixjax.testbed import draws
from mixjax.testbed import registry
from mixjax.testbed import text

NAME = "math"
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
  table = draws.split_table(seed, NAME, _all_facts(), lambda f: f"{f[1]} {f[0]} {f[2]}")
  return {split: {op: tuple((a, b) for o, a, b in facts if o == op) for op in text.ARITH}
          for split, facts in table.items()}


def _fact(facts: dict[str, tuple], d: draws.Draws) -> tuple[str, int, int, int]:
  op = d.choice(_MATH_OPS)
  a, b = d.choice(facts[op])
  return op, a, b, text.ARITH[op](a, b)


def _equation_line(facts, d: draws.Draws) -> str:
  return "{1} {0} {2} = {3}".format(*_fact(facts, d))


def _qa_line(facts, d: draws.Draws) -> str:
  return "Q: {1} {0} {2} = {3}".format(*_fact(facts, d))


def _word_problem(facts, d: draws.Draws) -> str:
  op, a, b, c = _fact(facts, d)
  return _WORD_PROBLEMS[op].format(who=d.choice(_WORD_NAMES), item=d.choice(_WORD_ITEMS),
                                   a=a, b=b, c=c)


def _mixed_line(facts, d: draws.Draws) -> str:
  return d.choice(_MATH_LINES)(facts, d)


_MATH_LINES = (_equation_line, _qa_line, _word_problem)
_MATH_STYLES = _MATH_LINES + (_mixed_line,)


def _document(config: config_lib.CorpusConfig, split: str, index: int, d: draws.Draws) -> dict:
  """Returns {"text"}: an optional header, then lines of one style over `split`'s facts."""
  facts = _math_facts(config.seed)[split]
  style = d.choice(_MATH_STYLES)
  lines = [d.choice(_MATH_HEADERS)] if d.chance(0.4) else []
  lines += text.fill(d, lambda: style(facts, d), 100)
  return {"text": "\n".join(lines)}


def _arithmetic_probe(config: config_lib.CorpusConfig,
                      d: draws.Draws) -> tuple[str, str, list[str]]:
  """Arithmetic: a held-out fact 'Q: a op b =' against near misses."""
  op, a, b, c = _fact(_math_facts(config.seed)["probe"], d)
  return f"Q: {a} {op} {b} =", str(c), text.numeric_distractors(d, c, 3, minimum=0)


def _magnitude_probe(config: config_lib.CorpusConfig,
                     d: draws.Draws) -> tuple[str, str, list[str]] | None:
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


# The explicit stream keys are the historical ones (list positions), which keep the corpus
# byte-identical to earlier runs and recorded results.
DOMAIN = registry.Domain(NAME, _document, stream_key=2, probe_kinds=(
    registry.ProbeKind("arithmetic", _arithmetic_probe, plain_stream=True),
    registry.ProbeKind("magnitude", _magnitude_probe, stream_key=1)))
