"""Training objectives as plug-ins, registered by name: `lm` (next-token prediction) and `ul2`
(UL2's mixture of denoisers). Each gives its preprocessors, output features, the layouts it trains
(feature converter -> architecture) and one prompt format, which evaluation, probes and
`mixjax.infer` all use."""

from mixjax.data.objectives import base
from mixjax.data.objectives import lm
from mixjax.data.objectives import ul2

_OBJECTIVES: dict[str, base.Objective] = {}


def register(objective: base.Objective) -> base.Objective:
  _OBJECTIVES[objective.name] = objective
  return objective


def get(name: str) -> base.Objective:
  try:
    return _OBJECTIVES[name]
  except KeyError:
    raise ValueError(f"Unknown objective {name!r}; valid: {', '.join(_OBJECTIVES)}.") from None


def names() -> tuple[str, ...]:
  return tuple(_OBJECTIVES)


register(lm.LM())
register(ul2.UL2())
