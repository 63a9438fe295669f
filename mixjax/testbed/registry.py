"""The domains of the testbed, registered by name, with their probe kinds and stream keys.

A `Domain` carries everything the corpus needs to know about it (generator, probe kinds, stream
key); `corpus.DOMAINS`, `PROBE_DOMAINS` and `PROBE_KINDS` are views of this registry in
registration order. Order decides only listings (file order, iteration order); every random
stream is keyed by a `stream_key`, which by default is crc32 of the name (see keys.py).
"""

import dataclasses
from collections.abc import Callable

from mixjax.testbed import keys

# A probe maker takes (config, draws) and returns (prompt, answer, distractors), or None when
# the draws give no usable probe (they are then skipped).
ProbeMaker = Callable[..., tuple[str, str, list[str]] | None]
# A generator takes (config, split, index, draws) and returns the document's fields ("text", ...).
Generator = Callable[..., dict]


@dataclasses.dataclass(frozen=True)
class ProbeKind:
  """One kind of held-out probe of a domain.

  `stream_key` defaults to crc32 of the name. `plain_stream` kinds draw from the domain's plain
  probe stream (no kind in the key), as the one probe kind of each domain did before there were
  kinds; they take no stream_key, and a domain has at most one.
  """
  name: str
  make: ProbeMaker
  stream_key: int | None = None
  plain_stream: bool = False

  def __post_init__(self):
    if self.plain_stream and self.stream_key is not None:
      raise ValueError(f"Probe kind {self.name!r} draws from the plain probe stream, so it "
                       f"takes no stream_key (got {self.stream_key}).")
    if not self.plain_stream and self.stream_key is None:
      object.__setattr__(self, "stream_key", keys.name_key(self.name))


@dataclasses.dataclass(frozen=True)
class Domain:
  """A text domain: `generate(config, split, index, draws)` -> fields of one document.

  `probe_kinds` lists its probes (the first is the hard, held-out one; empty: no probes).
  `stream_key` defaults to crc32 of the name.
  """
  name: str
  generate: Generator
  probe_kinds: tuple[ProbeKind, ...] = ()
  stream_key: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "probe_kinds", tuple(self.probe_kinds))
    if self.stream_key is None:
      object.__setattr__(self, "stream_key", keys.name_key(self.name))

  def probe_kind(self, name: str) -> ProbeKind:
    """Returns the probe kind called `name`; raises ValueError naming the valid ones."""
    for kind in self.probe_kinds:
      if kind.name == name:
        return kind
    raise ValueError(f"Unknown {self.name} probe kind {name!r}; valid: "
                     f"{', '.join(k.name for k in self.probe_kinds)}.")


_DOMAINS: dict[str, Domain] = {}  # by name, in registration order


def _duplicate(what: str, values: list) -> None:
  """Raises ValueError naming the first value in `values` that occurs twice."""
  seen = set()
  for value in values:
    if value in seen:
      raise ValueError(f"Duplicate {what} {value!r}; give each one a unique {what} (stream "
                       "keys default to crc32 of the name).")
    seen.add(value)


def _check(domain: Domain, others: list[Domain]) -> None:
  """Raises ValueError if `domain` shares a name or stream key with `others`, or if its probe
  kinds share a name or stream key or more than one draws from the plain stream."""
  _duplicate("domain name", [d.name for d in others] + [domain.name])
  _duplicate("domain stream_key", [d.stream_key for d in others] + [domain.stream_key])
  kinds = domain.probe_kinds
  _duplicate(f"{domain.name} probe kind name", [k.name for k in kinds])
  _duplicate(f"{domain.name} probe kind stream_key",
             ["plain stream" if k.plain_stream else k.stream_key for k in kinds])


def register(domain: Domain, before: str | None = None) -> Domain:
  """Adds `domain` last, or just before the domain named `before`; returns it.

  Raises ValueError on a duplicate name or stream key (of domains, or of its probe kinds).
  """
  others = list(_DOMAINS.values())
  _check(domain, others)
  if before is not None:
    position = names().index(get(before).name)
    others.insert(position, domain)
  else:
    others.append(domain)
  _DOMAINS.clear()
  _DOMAINS.update((d.name, d) for d in others)
  return domain


def unregister(name: str) -> Domain:
  """Removes the domain called `name` and returns it."""
  domain = get(name)
  del _DOMAINS[name]
  return domain


def get(name: str) -> Domain:
  """Returns the domain called `name`; raises ValueError naming the valid ones."""
  if name not in _DOMAINS:
    raise ValueError(f"Unknown domain {name!r}; valid: {', '.join(_DOMAINS)}.")
  return _DOMAINS[name]


def domains() -> tuple[Domain, ...]:
  """Returns every registered domain, in registration order."""
  return tuple(_DOMAINS.values())


def names() -> tuple[str, ...]:
  """Returns the names of the registered domains, in registration order."""
  return tuple(_DOMAINS)
