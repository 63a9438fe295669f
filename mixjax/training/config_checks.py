"""Types and ranges of a run's gin values, checked in plain Python before anything is built.

`check_run_values` collects every bad value at once and raises `GinValueError` naming each by its
run-level macro (T5X names, e.g. `TRAIN_STEPS`) or its dataclass field, the value it got, and what
is valid. A value such as `TRAIN_STEPS='abc'` would otherwise fail deep inside optax or tf.data.
"""

import dataclasses
import numbers
from typing import Any, Iterator, Mapping

from mixjax import gin_utils
from mixjax.data import features


class GinValueError(ValueError):
  """A gin value has the wrong type or is out of range."""


@dataclasses.dataclass(frozen=True)
class _Rule:
  field: str                 # "Class.field"
  kind: str                  # int | number | str
  minimum: int | None = None
  optional: bool = False     # None allowed


_RULES = (
    _Rule("RunConfig.model_dir", "str"),
    _Rule("RunConfig.train_steps", "int", 1),
    _Rule("RunConfig.seed", "int", 0),
    _Rule("RunConfig.log_period", "int", 1),
    _Rule("RunConfig.stop_at_step", "int", 1, optional=True),
    _Rule("DataConfig.mixture_or_task_name", "str"),
    _Rule("DataConfig.batch_size", "int", 1),
    _Rule("CheckpointConfig.period", "int", 0),
    _Rule("CheckpointConfig.keep", "int", 1),
    _Rule("EvalConfig.period", "int", 0),
    _Rule("EvalConfig.num_batches", "int", 0),
    _Rule("EvalConfig.batch_size", "int", 1),
    _Rule("EvalConfig.max_probes", "int", 0),
    _Rule("OptimizerConfig.learning_rate", "number"),
    _Rule("OptimizerConfig.warmup_steps", "int", 0),
)


def _name(field: str) -> str:
  macro = gin_utils.MACRO_OF_FIELD.get(field) or _EXTRA_MACROS.get(field)
  return f"{macro} ({field})" if macro else field


_EXTRA_MACROS = {"RunConfig.seed": "SEED", "CheckpointConfig.period": "CHECKPOINT_PERIOD",
                 "EvalConfig.period": "EVAL_PERIOD"}


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _problem(rule: _Rule, value: Any) -> str | None:
  if value is None and rule.optional:
    return None
  if rule.kind == "str":
    if isinstance(value, str) and value:
      return None
    return f"= {value!r}: must be a non-empty string (gin strings need quotes: 'value')"
  if rule.kind == "number":
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
      return None
    return f"= {value!r}: must be a number"
  valid = "an integer" + (f" >= {rule.minimum}" if rule.minimum is not None else "")
  if rule.optional:
    valid += " or None"
  if not _is_int(value) or (rule.minimum is not None and value < rule.minimum):
    return f"= {value!r}: must be {valid}"
  return None


def _feature_length_problems(lengths: Any, converter: str) -> Iterator[str]:
  name = _name("DataConfig.task_feature_lengths")
  needed = sorted(features.FEATURE_CONVERTERS[converter].TASK_FEATURES) if (
      converter in features.FEATURE_CONVERTERS) else ["targets"]
  example = "{" + ", ".join(f"'{k}': 128" for k in needed) + "}"
  if not isinstance(lengths, Mapping):
    yield f"{name} = {lengths!r}: must be a dict of feature lengths, e.g. {example}"
    return
  missing = [k for k in needed if k not in lengths]
  unknown = sorted(k for k in lengths if k not in needed)
  if missing or unknown:
    yield (f"{name} = {dict(lengths)!r}: feature_converter={converter!r} needs exactly the keys "
           f"{needed} (missing {missing}, unknown {unknown}), e.g. {example}")
  for key in needed:
    if key in lengths and (not _is_int(lengths[key]) or lengths[key] < 1):
      yield f"{name}[{key!r}] = {lengths[key]!r}: must be an integer >= 1"


def check_run_values(*configs) -> None:
  """Raises `GinValueError` listing every bad value among the given config dataclasses."""
  by_class = {type(c).__name__: c for c in configs}
  problems = []
  for rule in _RULES:
    cls, field = rule.field.split(".")
    if cls in by_class:
      problem = _problem(rule, getattr(by_class[cls], field))
      if problem:
        problems.append(f"{_name(rule.field)} {problem}")
  data = by_class.get("DataConfig")
  if data is not None:
    problems.extend(_feature_length_problems(data.task_feature_lengths, data.feature_converter))
  if problems:
    raise GinValueError("Bad gin values:\n  " + "\n  ".join(problems) + "\nSet them in a gin "
                        "file or on the command line, e.g. --gin.TRAIN_STEPS=1000.")
