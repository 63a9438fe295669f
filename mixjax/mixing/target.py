"""What a mixture is optimised for (gin macro `MIXING_TARGET`), as weights over eval sets.

A target is a domain of the run's mixture (its validation split), a registered task outside the
mixture (its validation split; e.g. a testbed target of known composition), or a `{domain:
weight}` dict of the mixture's validation splits. `resolve` turns it into the extra eval tasks a
method must score and the weights `[S]` that make each proxy's target loss from its per-set
losses `[K, S]`.
"""

import dataclasses
from typing import Mapping, Union

import numpy as np

from mixjax.data import tasks

Target = Union[str, Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class ResolvedTarget:
  """`eval_tasks` ({eval set: task}) to score beside the domains; `weights_S` over
  `eval_sets` (domains first, then `eval_tasks`)."""
  name: str
  eval_tasks: Mapping[str, str]
  eval_sets: tuple[str, ...]
  weights_S: np.ndarray

  def loss_K(self, loss_KS: np.ndarray) -> np.ndarray:
    """The target loss of each proxy from its per-eval-set losses `[K, S]`."""
    return np.asarray(loss_KS) @ self.weights_S


def resolve(target: Target, domains: tuple[str, ...]) -> ResolvedTarget:
  """Resolves `target` against the mixture's `domains`; raises naming what would be valid."""
  if isinstance(target, Mapping):
    unknown = sorted(set(target) - set(domains))
    if unknown or not target:
      raise ValueError(f"MIXING_TARGET {dict(target)} names unknown domains {unknown}; a dict "
                       f"target weighs the mixture's validation splits: {list(domains)}.")
    weights = np.asarray([float(target.get(d, 0.0)) for d in domains])
    if np.any(weights < 0) or weights.sum() <= 0 or not np.all(np.isfinite(weights)):
      raise ValueError(f"MIXING_TARGET {dict(target)}: weights must be finite, >= 0, not all 0.")
    name = "+".join(f"{w:g}*{d}" for d, w in target.items())
    return ResolvedTarget(name, {}, domains, weights / weights.sum())
  if not isinstance(target, str):
    raise ValueError(f"MIXING_TARGET must be a domain, a registered task or a {{domain: weight}} "
                     f"dict, got {type(target).__name__} {target!r}.")
  if target in domains:
    return ResolvedTarget(target, {}, domains, np.eye(len(domains))[domains.index(target)])
  if target not in tasks.names():
    raise ValueError(f"MIXING_TARGET {target!r} is neither a domain of the mixture "
                     f"({', '.join(domains)}) nor a registered task.")
  if "validation" not in tasks.get(target).splits:
    raise ValueError(f"MIXING_TARGET task {target!r} has no validation split to optimise for.")
  eval_sets = domains + ("target",)
  return ResolvedTarget(target, {"target": target}, eval_sets,
                        np.eye(len(eval_sets))[-1])
