"""Targets of known composition: held-out documents that are a known mixture of train domains.

A target (e.g. `bios3_math1`: 3 parts bios to 1 part math, by documents) is what a mixture
method can be checked against: the right answer puts weight on its parts, in their order, and
little on the rest. A target's documents are the held-out (validation-split) kind of each part
(no train fact or program leaks in), drawn from streams of their own: keyed by the target's name
as well as the domain's, so they are new documents, not the domains' validation split, and
registering a target changes no domain's output.
"""

import dataclasses
import math
from collections.abc import Mapping

from mixjax.testbed import config as config_lib
from mixjax.testbed import domains  # noqa: F401  (registers the domains)
from mixjax.testbed import draws
from mixjax.testbed import keys
from mixjax.testbed import registry

_TARGET_STREAM = keys.name_key("mixjax.testbed.targets")


@dataclasses.dataclass(frozen=True)
class Target:
  """`parts`: (domain, share) pairs; shares are normalised."""
  name: str
  parts: tuple[tuple[str, float], ...]

  def __post_init__(self):
    pairs = self.parts.items() if isinstance(self.parts, Mapping) else self.parts
    parts = tuple((str(d), float(w)) for d, w in pairs)
    if not parts or any(w < 0 or not math.isfinite(w) for _, w in parts) or sum(
        w for _, w in parts) <= 0:
      raise ValueError(f"Target {self.name!r}: parts {parts} need finite shares >= 0, not all 0.")
    object.__setattr__(self, "parts", parts)

  @property
  def weights(self) -> dict[str, float]:
    total = sum(w for _, w in self.parts)
    return {d: w / total for d, w in self.parts}


_TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
  for domain, _ in target.parts:
    registry.get(domain)  # raises naming the valid domains
  if target.name in _TARGETS:
    raise ValueError(f"Duplicate target name {target.name!r}.")
  _TARGETS[target.name] = target
  return target


def get(name: str) -> Target:
  if name not in _TARGETS:
    raise ValueError(f"Unknown target {name!r}; valid: {', '.join(_TARGETS)}.")
  return _TARGETS[name]


def names() -> tuple[str, ...]:
  return tuple(_TARGETS)


def counts(target: Target, num_docs: int) -> dict[str, int]:
  """Documents per part: largest-remainder shares of `num_docs` (ties to the earlier part)."""
  quotas = [num_docs * w for w in target.weights.values()]
  out = [math.floor(q) for q in quotas]
  for i in sorted(range(len(out)), key=lambda i: out[i] - quotas[i])[:num_docs - sum(out)]:
    out[i] += 1
  return dict(zip(target.weights, out))


def documents(config: config_lib.CorpusConfig, name: str, num_docs: int) -> list[dict]:
  """The target's `num_docs` held-out documents, part by part: {"id", "domain", "text", ...}."""
  target = get(name)
  docs = []
  for domain, n in counts(target, num_docs).items():
    entry = registry.get(domain)
    for index in range(n):
      d = draws.Draws((config.seed, _TARGET_STREAM, keys.name_key(name), entry.stream_key,
                       index))
      record = {"id": f"target-{name}-{domain}-{index:06d}", "domain": domain}
      record.update(entry.generate(config, "validation", index, d))
      docs.append(record)
  return docs


register(Target("bios3_math1", (("bios", 3.0), ("math", 1.0))))
register(Target("code2_prose1", (("code", 2.0), ("prose", 1.0))))
