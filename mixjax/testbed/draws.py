"""Seeded uniform draws (SHAKE-128 words) and crc32 held-out buckets: the testbed's randomness.

Neither uses Python's salted `hash`, numpy or the `random` module, so the corpus is the same on
every Python and numpy version, machine and process.
"""

import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence

_BLOCK_FORMAT = struct.Struct("<64Q")  # one block of random words
HELD_OUT_SPLITS = ("train", "validation", "probe")  # the owners `heldout_split` picks among


class Draws:
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
    """True with probability `p`."""
    return self.below(1 << 30) < p * (1 << 30)

  def choice(self, items: Sequence):
    """One item of `items`."""
    return items[self.below(len(items))]

  def shuffled(self, items: Sequence) -> list:
    """A new list of `items` in random order (Fisher-Yates)."""
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


def heldout_split(seed: int, domain: str, key: str) -> str:
  """Which split owns an item: 10% probe, 10% validation, 80% train (stable crc32 buckets).

  Keyed by the domain's name and the item's text, so no bucket depends on a list position.
  """
  bucket = zlib.crc32(f"{seed}|{domain}|{key}".encode()) % 10
  return "probe" if bucket == 0 else "validation" if bucket == 1 else "train"


def split_table(seed: int, domain: str, items: Sequence, key: Callable) -> dict[str, tuple]:
  """Returns `items` partitioned by `heldout_split` of `key(item)`, keyed by split name."""
  table = {name: [] for name in HELD_OUT_SPLITS}
  for item in items:
    table[heldout_split(seed, domain, key(item))].append(item)
  return {name: tuple(group) for name, group in table.items()}
