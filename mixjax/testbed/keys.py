"""The key of every random stream of the testbed, built from names' keys, never list positions.

A key is a tuple of ints that `draws.Draws` hashes. Documents use (seed, domain key, split
stream, index); probes (seed, domain key, probe stream, [kind key,] number); the world (seed,
world stream, number of people). The tuples differ in length or in their stream, so no two
streams share a key.
"""

import zlib

# Stream ids in document and probe keys: the splits and the probes.
STREAMS = {"train": 0, "validation": 1, "probe": 2}
WORLD_STREAM = 3


def name_key(name: str) -> int:
  """The default stream key of a domain or probe kind: crc32 of its name.

  Returns an int in [0, 2**32); it depends on the name alone, so registering a domain anywhere
  leaves every other stream as it was.
  """
  return zlib.crc32(name.encode())


def document_key(seed: int, domain_key: int, split: str, index: int) -> tuple[int, ...]:
  """Returns the key of document `index` of a domain in `split`."""
  return (seed, domain_key, STREAMS[split], index)


def probe_key(seed: int, domain_key: int, kind_key: int | None, number: int) -> tuple[int, ...]:
  """Returns the key of draw `number` of a probe kind; `kind_key` None is the domain's plain
  probe stream (the key of the one probe kind each domain had before kinds existed)."""
  if kind_key is None:
    return (seed, domain_key, STREAMS["probe"], number)
  return (seed, domain_key, STREAMS["probe"], kind_key, number)


def world_key(seed: int, num_people: int) -> tuple[int, ...]:
  """Returns the key of the world's draws."""
  return (seed, WORLD_STREAM, num_people)
