"""Made-up words: seeded strings of capitalised nonsense words, unpredictable except by copying
(the copy probe's strings, the linked documents' names). No heavy imports."""

import numpy as np

_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


def random_strings(count: int, words: int = 6, seed: int = 0) -> list[str]:
  """`count` seeded strings of `words` made-up capitalised words of 2-3 syllables."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    out.append(" ".join("".join(_SYLLABLES[i] for i in rng.integers(len(_SYLLABLES),
                                                                   size=rng.integers(2, 4)))
                        .capitalize() for _ in range(words)))
  return out
