"""The output contract of a mixture-optimisation method (DESIGN.md): `DIR/weights.json`
(`{domain: weight}`, summing to 1), `DIR/mixture.gin` (a `MIXTURE_SCHEDULE` binding that trains
on those weights, added after the run's gin file) and `DIR/report.json` (the method's figures)."""

import json
import os
from typing import Mapping

import numpy as np


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
  values = np.asarray([float(w) for w in weights.values()])
  if np.any(values < 0) or values.sum() <= 0 or not np.all(np.isfinite(values)):
    raise ValueError(f"Mixture weights {dict(weights)} must be finite, >= 0 and not all 0.")
  return {d: float(w) for d, w in zip(weights, values / values.sum())}


def mixture_gin(weights: Mapping[str, float], method: str) -> str:
  rates = ", ".join(f"'{d}': {w!r}" for d, w in weights.items())
  return (f"# Weights found by {method}. Train on them after the run's gin file:\n"
          f"#   python -m mixjax.train --gin_file=RUN.gin --gin_file=THIS_DIR/mixture.gin\n"
          "import mixjax.mixing.schedules\n\n"
          "MIXTURE_SCHEDULE = @constant_schedule()\n"
          f"constant_schedule.rates = {{{rates}}}\n")


def write(out_dir: str, weights: Mapping[str, float], method: str,
          report: Mapping | None = None) -> dict[str, float]:
  """Writes weights.json, mixture.gin and report.json into `out_dir`; returns the weights."""
  weights = normalised(weights)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "weights.json"), "w") as f:
    json.dump(weights, f, indent=1)
  with open(os.path.join(out_dir, "mixture.gin"), "w") as f:
    f.write(mixture_gin(weights, method))
  if report is not None:
    with open(os.path.join(out_dir, "report.json"), "w") as f:
      json.dump(report, f, indent=1, default=float)
  return weights
