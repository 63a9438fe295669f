"""Paired summaries over seeds: each arm's mean ± std, and each arm's difference from the baseline
arm taken seed by seed (every arm of a seed shares that seed's data and initialisation)."""

import json
import os
from typing import Mapping

import numpy as np

# {seed: {arm: {metric: value}}}
PerSeed = Mapping[int, Mapping[str, Mapping[str, float]]]


def difference_name(arm: str, baseline: str) -> str:
  """The summary's name for the paired difference `arm − baseline`."""
  return f"{arm}-{baseline}"


def summarise(per_seed: PerSeed, baseline: str) -> dict[str, float]:
  """Flat dict of floats: `seed<S>/<arm>/<metric>` for every figure, then `mean/<name>/<metric>`
  and `std/<name>/<metric>` (sample std, ddof=1; 0.0 for one seed) over seeds, where `<name>` is
  each arm and each `<arm>-<baseline>` difference. Metrics are the baseline arm's (of the first
  seed); every arm of every seed must have them."""
  if not per_seed:
    raise ValueError("summarise needs at least one seed.")
  flat = {f"seed{seed}/{arm}/{k}": v for seed, arms in per_seed.items()
          for arm, figures in arms.items() for k, v in figures.items()}
  first = next(iter(per_seed.values()))
  if baseline not in first:
    raise ValueError(f"Baseline arm {baseline!r} is not among the arms {list(first)}.")
  arms = list(first)
  for k in sorted(first[baseline]):
    values = {arm: np.asarray([per_seed[s][arm][k] for s in per_seed], np.float64)
              for arm in arms}
    values.update({difference_name(arm, baseline): values[arm] - values[baseline]
                   for arm in arms if arm != baseline})
    for name, v in values.items():
      flat[f"mean/{name}/{k}"] = float(v.mean())
      flat[f"std/{name}/{k}"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
  return flat


def write_json(flat: Mapping[str, float], path: str | None) -> None:
  """Writes the flat results to `path` (sorted keys; its folder made), or nothing when None."""
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(dict(flat), f, indent=1, sort_keys=True)
