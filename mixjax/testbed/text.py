"""Text and answer helpers shared by the domains: filling a body, sentence case, near misses."""

import operator
from collections.abc import Callable, Sequence

from mixjax.testbed import draws

# Bodies of at most 450 chars keep documents within ~100-600 chars, so several fit in one
# 256-1024 byte context.
MAX_BODY_CHARS = 450
# The operators that math prints as facts and code evaluates in programs.
ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def fill(d: draws.Draws, make: Callable[[], str], low: int,
         high: int = MAX_BODY_CHARS) -> list[str]:
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


def sentence(text: str) -> str:
  """`text` with its first letter upper-cased."""
  return text[0].upper() + text[1:]


def article(word: str) -> str:
  """'an apple', 'a pear'."""
  return ("an " if word[0] in "aeiou" else "a ") + word


def join_names(names: Sequence[str]) -> str:
  """'A', 'A and B', 'A, B and C'."""
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def numeric_distractors(d: draws.Draws, value: int, k: int, minimum: int | None) -> list[str]:
  """k distinct near misses of `value` (off by 1, 2, 3 or 10), none below `minimum`."""
  offsets = [o for o in (1, -1, 2, -2, 3, -3, 10, -10) if minimum is None or value + o >= minimum]
  return [str(value + o) for o in d.sample(offsets, k)]
