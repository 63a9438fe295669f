"""What to generate (`CorpusConfig`, checked against the registered domains) and the number of
documents per domain and split that it implies."""

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping, Sequence

from mixjax.testbed import registry

SPLITS = ("train", "validation")
# The default mixture is a choice of config, not a property of the domains: a domain registered
# later gets weight 0 here, so default corpora stay as they were.
DEFAULT_WEIGHTS = (("web", 0.4), ("bios", 0.2), ("math", 0.15), ("code", 0.15), ("prose", 0.1))
_MAX_VALIDATION_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What to generate; hashable so that derived tables are cached per config.

  `num_docs` counts train documents over all domains; validation adds
  `validation_fraction` of each domain's count on top. `domain_weights` may also be given as a
  mapping; it is stored as a tuple of (domain, weight) pairs, and unnamed domains get weight 0.
  """
  num_docs: int = 20_000
  seed: int = 0
  domain_weights: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS
  validation_fraction: float = 0.05
  num_probes: int = 200

  def __post_init__(self):
    weights = self.domain_weights
    pairs = weights.items() if isinstance(weights, Mapping) else weights
    object.__setattr__(self, "domain_weights", tuple((str(d), float(w)) for d, w in pairs))
    _check_config(self)
    for name in ("num_docs", "seed", "num_probes"):  # numpy ints would not serialise to JSON
      object.__setattr__(self, name, int(getattr(self, name)))
    object.__setattr__(self, "validation_fraction", float(self.validation_fraction))


def _is_count(value) -> bool:
  """A non-negative integer (numpy integers included, bools not)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def _check_config(config: CorpusConfig) -> None:
  """Raises ValueError naming the bad field and what would be valid."""
  if not _is_count(config.num_docs) or config.num_docs < 1:
    raise ValueError(f"num_docs must be a positive integer, got {config.num_docs!r}; "
                     "set num_docs (--docs) to 1 or more.")
  if not _is_count(config.seed):
    raise ValueError(f"seed must be a non-negative integer, got {config.seed!r}.")
  names = [d for d, _ in config.domain_weights]
  domains = registry.names()
  for domain, weight in config.domain_weights:
    if domain not in domains:
      raise ValueError(f"Unknown domain {domain!r} in domain_weights; valid domains: "
                       f"{', '.join(domains)}.")
    if names.count(domain) > 1:
      raise ValueError(f"Domain {domain!r} appears twice in domain_weights; give it once.")
    if not math.isfinite(weight) or weight < 0:
      raise ValueError(f"Weight of {domain!r} is {weight}; weights must be finite and >= 0 "
                       "(use 0 to leave a domain out).")
  if not any(w > 0 for _, w in config.domain_weights):
    raise ValueError("All domain weights are 0; give at least one domain a positive weight, "
                     "e.g. web=0.4,bios=0.2.")
  if not 0 <= config.validation_fraction <= _MAX_VALIDATION_FRACTION:
    raise ValueError(f"validation_fraction must be in [0, {_MAX_VALIDATION_FRACTION}], got "
                     f"{config.validation_fraction}.")
  if not _is_count(config.num_probes):
    raise ValueError(f"num_probes must be a non-negative integer, got {config.num_probes!r}.")


def check_name(kind: str, name: str, valid: Sequence[str]) -> None:
  """Raises ValueError if `name` is not in `valid`, naming the valid ones."""
  if name not in valid:
    raise ValueError(f"Unknown {kind} {name!r}; valid: {', '.join(valid)}.")


@functools.lru_cache(maxsize=64)
def _train_counts(config: CorpusConfig, domains: tuple[str, ...]) -> tuple[int, ...]:
  """Train docs per domain of `domains`: largest-remainder shares of num_docs.

  Ties go to the earlier domain; a domain of weight 0 never takes a remainder, so registering
  one anywhere leaves the other counts as they were. Keyed by `domains` so that a cached count
  never outlives a change of the registry.
  """
  weights = dict(config.domain_weights)
  total = sum(weights.values())
  quotas = [config.num_docs * weights.get(d, 0.0) / total for d in domains]
  counts = [math.floor(q) for q in quotas]
  by_remainder = sorted(range(len(domains)), key=lambda i: counts[i] - quotas[i])  # stable
  for i in by_remainder[:config.num_docs - sum(counts)]:
    counts[i] += 1
  return tuple(counts)


def domain_counts(config: CorpusConfig, split: str = "train") -> dict[str, int]:
  """Returns the number of documents per domain (registration order) in `split`.

  Validation rounds `validation_fraction` of the train count half up and keeps at least 1 per
  domain with train documents.
  """
  check_name("split", split, SPLITS)
  domains = registry.names()
  train = _train_counts(config, domains)
  fraction = config.validation_fraction
  if split == "validation":
    train = [max(1, int(n * fraction + 0.5)) if n and fraction else 0 for n in train]
  return dict(zip(domains, train))
