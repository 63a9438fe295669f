"""Mixture rates and schedules: the share of each domain in the batch at step t, written in gin.

A *rates* spec says how much of each domain to draw, up to a constant: a dict
`{'math': 2.0, ...}` (unnamed domains get 0), the name of a registered SeqIO mixture or task (its
static rates), or a rates function of the domains' sizes (`temperature_rates`, `unimax_rates`,
`scaled_rates`). A *schedule* says how the rates change over training: `constant_schedule`,
`stages`, `linear_ramp`, `upsample_at_end`. Stage boundaries are steps (int) or fractions of
training (float in [0, 1]).

Every schedule resolves, for a run of `total_steps`, to contiguous segments over which the
normalised weights move linearly; `ResolvedSchedule.weights_D(step)` is what the batch iterator
asks for. Steps past the end keep the last weights.
"""

import abc
import bisect
import dataclasses
from typing import Any, Callable, Mapping, Sequence, Union

import gin
import numpy as np
import seqio

from mixjax.data import pipeline
from mixjax.mixing import sources


@dataclasses.dataclass(frozen=True)
class DomainSize:
  """One epoch of a domain's train split, packed: rows of the run's length and real tokens."""
  rows: int
  tokens: int
  complete: bool = True  # False: counting stopped early, so these are lower bounds


@dataclasses.dataclass(frozen=True)
class MixtureContext:
  """What rates and schedules resolve against. `sizes` is called only by size-based rates."""
  domains: tuple[str, ...]
  total_steps: int
  rows_per_step: int
  sizes: Callable[[], Mapping[str, DomainSize]] = dataclasses.field(default=lambda: {})
  task_domains: Mapping[str, str] = dataclasses.field(default_factory=dict)  # task -> domain


class ScheduleError(ValueError):
  """A rates spec or schedule is invalid; the message names the bad part and what is valid."""


class RatesFn(abc.ABC):
  """Rates computed from the context (domain sizes, the run's budget)."""

  @abc.abstractmethod
  def __call__(self, ctx: MixtureContext) -> Mapping[str, float]:
    """Unnormalised rate per domain."""


Rates = Union[Mapping[str, float], str, RatesFn]


def _registered_rates(name: str, ctx: MixtureContext) -> dict[str, float]:
  try:
    provider = seqio.get_mixture_or_task(name)
  except ValueError:
    raise ScheduleError(f"Rates {name!r} name no registered SeqIO mixture or task; give a "
                        f"registered name or a dict over domains {list(ctx.domains)}.") from None
  if isinstance(provider, seqio.Mixture):
    return {t.name: provider.get_rate(t) for t in provider.tasks}
  return {provider.name: 1.0}


def domain_vector(values: Mapping[str, float], ctx: MixtureContext, where: str,
                   fill: float) -> np.ndarray:
  """`[D]` values by domain (domain or task names; unnamed domains get `fill`), checked."""
  out_D = np.full(len(ctx.domains), fill, dtype=float)
  for name, value in values.items():
    domain = ctx.task_domains.get(name, name)
    if domain not in ctx.domains:
      raise ScheduleError(f"{where}: unknown domain {name!r}; valid domains: "
                          f"{', '.join(ctx.domains)}.")
    try:
      value = float(value)
    except (TypeError, ValueError):
      raise ScheduleError(f"{where}: value of {name!r} is {value!r}, not a number.") from None
    if not np.isfinite(value) or value < 0:
      raise ScheduleError(f"{where}: value of {name!r} is {value}; it must be finite and >= 0 "
                          "(use 0 to leave a domain out).")
    out_D[ctx.domains.index(domain)] = value
  return out_D


def resolve_rates(rates: Rates, ctx: MixtureContext, where: str = "rates") -> np.ndarray:
  """Normalised weights `[D]` in `ctx.domains` order; clear errors for bad specs."""
  if isinstance(rates, RatesFn):
    rates = rates(ctx)
  elif isinstance(rates, str):
    rates = _registered_rates(rates, ctx)
  if not isinstance(rates, Mapping):
    raise ScheduleError(f"{where}: expected a dict of domain rates, a registered mixture name or "
                        f"a rates function, got {type(rates).__name__} {rates!r}.")
  weights_D = domain_vector(rates, ctx, where, fill=0.0)
  if weights_D.sum() <= 0:
    raise ScheduleError(f"{where}: all rates are 0; give at least one of {list(ctx.domains)} a "
                        "positive rate.")
  return weights_D / weights_D.sum()


# ----------------------------------------------------------------------------------------------
# Rates functions.


@dataclasses.dataclass(frozen=True)
class _Scaled(RatesFn):
  base: Rates
  factors: Mapping[str, float]

  def __call__(self, ctx):
    factors_D = domain_vector(self.factors, ctx, "scaled_rates.factors", fill=1.0)
    return dict(zip(ctx.domains, resolve_rates(self.base, ctx, "scaled_rates.base") * factors_D))


@gin.configurable
def scaled_rates(base: Rates = gin.REQUIRED, factors: Mapping[str, float] = gin.REQUIRED) -> RatesFn:
  """`base` with some domains multiplied (e.g. math 4x relative to the others), renormalised."""
  return _Scaled(base, dict(factors))


@dataclasses.dataclass(frozen=True)
class _Replay(RatesFn):
  new: Rates
  replay: Rates
  ratio: float

  def __call__(self, ctx):
    new_D = resolve_rates(self.new, ctx, "replay_rates.new")
    replay_D = resolve_rates(self.replay, ctx, "replay_rates.replay")
    return dict(zip(ctx.domains, (1.0 - self.ratio) * new_D + self.ratio * replay_D))


@gin.configurable
def replay_rates(new: Rates = gin.REQUIRED, replay: Rates = gin.REQUIRED,
                 ratio: float = gin.REQUIRED) -> RatesFn:
  """Continued pre-training with replay: a share `ratio` of the rows from `replay` (e.g. the
  base run's mixture), the rest from `new` (the new domain's rates); each side normalised first.
  """
  try:
    ratio = float(ratio)
  except (TypeError, ValueError):
    raise ScheduleError(f"replay_rates.ratio={ratio!r} is not a number in [0, 1].") from None
  if not 0.0 <= ratio <= 1.0:
    raise ScheduleError(f"replay_rates.ratio={ratio} must lie in [0, 1] (the share of replayed "
                        "rows; e.g. 0.25 for 25%).")
  return _Replay(new, replay, ratio)


def _sizes(ctx: MixtureContext, who: str) -> dict[str, DomainSize]:
  sizes = dict(ctx.sizes())
  missing = [d for d in ctx.domains if d not in sizes]
  if missing:
    raise ScheduleError(f"{who} needs domain sizes, but none are known for {missing}.")
  return sizes


@dataclasses.dataclass(frozen=True)
class _Temperature(RatesFn):
  temperature: float
  maximum_tokens: float | None

  def __call__(self, ctx):
    sizes = _sizes(ctx, "temperature_rates")
    tokens_D = np.asarray([sizes[d].tokens for d in ctx.domains], float)
    if self.maximum_tokens is not None:
      tokens_D = np.minimum(tokens_D, self.maximum_tokens)
    return dict(zip(ctx.domains, tokens_D ** (1.0 / self.temperature)))


@gin.configurable
def temperature_rates(temperature: float = 1.0, maximum_tokens: float | None = None) -> RatesFn:
  """T5's examples-proportional mixing: rate ∝ min(tokens, maximum)^(1/T); T=1 is by size."""
  if not temperature > 0:
    raise ScheduleError(f"temperature_rates: temperature must be > 0, got {temperature}.")
  return _Temperature(float(temperature), maximum_tokens)


@dataclasses.dataclass(frozen=True)
class _UniMax(RatesFn):
  max_epochs: float

  def __call__(self, ctx):
    sizes = _sizes(ctx, "unimax_rates")
    budget = float(ctx.total_steps * ctx.rows_per_step)
    rows = {}
    # Smallest first: each takes an equal share of what is left, or its cap if that is less.
    order = sorted(ctx.domains, key=lambda d: (sizes[d].rows, ctx.domains.index(d)))
    for i, domain in enumerate(order):
      rows[domain] = min(budget / (len(order) - i), self.max_epochs * sizes[domain].rows)
      budget -= rows[domain]
    return rows


@gin.configurable
def unimax_rates(max_epochs: float = 1.0) -> RatesFn:
  """UniMax (Chung et al., 2023): the run's rows spread uniformly, no domain repeated more than
  `max_epochs` times; what a small domain cannot take goes to the larger ones."""
  if not max_epochs > 0:
    raise ScheduleError(f"unimax_rates: max_epochs must be > 0, got {max_epochs}.")
  return _UniMax(float(max_epochs))


# ----------------------------------------------------------------------------------------------
# Schedules.


@dataclasses.dataclass(frozen=True)
class Segment:
  """Steps [start, end) over which weights go linearly from `begin_D` to `end_D` (at `end`)."""
  start: int
  end: int
  begin_D: np.ndarray
  end_D: np.ndarray


class Schedule(abc.ABC):
  """Mixture weights over training."""

  @abc.abstractmethod
  def segments(self, ctx: MixtureContext) -> list[Segment]:
    """Contiguous segments covering [0, ctx.total_steps)."""

  def resolve(self, ctx: MixtureContext) -> "ResolvedSchedule":
    return ResolvedSchedule(ctx.domains, tuple(self.segments(ctx)))


@dataclasses.dataclass(frozen=True)
class ResolvedSchedule(sources.WeightSource):
  """A schedule for one run: the static weight source."""
  domains: tuple[str, ...]
  segments: tuple[Segment, ...]

  def weights_D(self, step: int) -> np.ndarray:
    """Normalised weights of the batch at 0-based `step` (the batch of train step `step + 1`)."""
    i = bisect.bisect_right([s.start for s in self.segments], step) - 1
    seg = self.segments[max(i, 0)]
    if step >= seg.end:
      return seg.end_D
    frac = (step - seg.start) / (seg.end - seg.start)
    return seg.begin_D + (seg.end_D - seg.begin_D) * frac

  def describe(self) -> str:
    """One line per segment, for logs."""
    fmt = lambda w_D: ", ".join(f"{d}={w:.3f}" for d, w in zip(self.domains, w_D))  # noqa: E731
    lines = []
    for s in self.segments:
      ramp = "" if np.array_equal(s.begin_D, s.end_D) else f" -> {fmt(s.end_D)}"
      lines.append(f"steps [{s.start}, {s.end}): {fmt(s.begin_D)}{ramp}")
    return "\n".join(lines)


def to_step(point: int | float, total_steps: int, where: str) -> int:
  """An int is a step; a float is a fraction of training, in [0, 1]."""
  if isinstance(point, bool) or not isinstance(point, (int, float, np.integer, np.floating)):
    raise ScheduleError(f"{where}: {point!r} is neither a step (int) nor a fraction (float).")
  if isinstance(point, (float, np.floating)):
    if not 0.0 <= point <= 1.0:
      raise ScheduleError(f"{where}: fraction {point} is outside [0, 1]; use a float in [0, 1] "
                          "for a fraction of training or an int for a step.")
    return int(round(point * total_steps))
  if point < 0:
    raise ScheduleError(f"{where}: step {point} is negative.")
  return int(point)


@dataclasses.dataclass(frozen=True)
class _Constant(Schedule):
  rates: Rates

  def segments(self, ctx):
    w_D = resolve_rates(self.rates, ctx)
    return [Segment(0, ctx.total_steps, w_D, w_D)]


@gin.configurable
def constant_schedule(rates: Rates = gin.REQUIRED) -> Schedule:
  """The same rates at every step (e.g. a registered mixture's name)."""
  return _Constant(rates)


@dataclasses.dataclass(frozen=True)
class _Ramp(Schedule):
  start_rates: Rates
  end_rates: Rates
  start: int | float
  end: int | float

  def segments(self, ctx):
    a_D = resolve_rates(self.start_rates, ctx, "linear_ramp.start_rates")
    b_D = resolve_rates(self.end_rates, ctx, "linear_ramp.end_rates")
    start = to_step(self.start, ctx.total_steps, "linear_ramp.start")
    end = to_step(self.end, ctx.total_steps, "linear_ramp.end")
    if end <= start:
      raise ScheduleError(f"linear_ramp: end ({self.end} -> step {end}) must come after start "
                          f"({self.start} -> step {start}).")
    pieces = [Segment(0, start, a_D, a_D), Segment(start, end, a_D, b_D),
              Segment(end, max(end, ctx.total_steps), b_D, b_D)]
    return [s for s in pieces if s.end > s.start]


@gin.configurable
def linear_ramp(start_rates: Rates = gin.REQUIRED, end_rates: Rates = gin.REQUIRED,
                start: int | float = 0.0, end: int | float = 1.0) -> Schedule:
  """`start_rates` until `start`, then weights move linearly to `end_rates`, reached at `end`."""
  return _Ramp(start_rates, end_rates, start, end)


@dataclasses.dataclass(frozen=True)
class _Stages(Schedule):
  stages: tuple[tuple[Any, Any, Any], ...]

  def segments(self, ctx):
    spans = []
    for i, stage in enumerate(self.stages):
      where = f"stages[{i}]"
      if not isinstance(stage, (tuple, list)) or len(stage) != 3:
        raise ScheduleError(f"{where}: expected (start, end, rates_or_schedule), got {stage!r}.")
      start = to_step(stage[0], ctx.total_steps, f"{where} start")
      end = to_step(stage[1], ctx.total_steps, f"{where} end")
      if end <= start:
        raise ScheduleError(f"{where} {tuple(stage[:2])}: end (step {end}) must come after start "
                            f"(step {start}).")
      spans.append((start, end, i, stage[2]))
    spans.sort(key=lambda s: s[:2])
    if not spans:
      raise ScheduleError("stages: no stages given.")
    covered = 0
    for start, end, i, _ in spans:
      if start < covered:
        raise ScheduleError(f"stages overlap: stages[{i}] starts at step {start}, before the "
                            f"stage before it ends (step {covered}); make each start where "
                            "the previous one ends.")
      if start > covered:
        raise ScheduleError(f"stages leave steps [{covered}, {start}) without rates; make each "
                            "stage start where the previous one ends.")
      covered = end
    if covered < ctx.total_steps:
      raise ScheduleError(f"stages end at step {covered}, before training ends (step "
                          f"{ctx.total_steps}); let the last stage end at 1.0.")
    segments = []
    for start, end, i, content in spans:
      if isinstance(content, Schedule):
        for s in content.segments(ctx):
          lo, hi = max(s.start, start), min(s.end, end)
          if hi > lo:
            segments.append(Segment(lo, hi, _at(s, lo), _at(s, hi)))
      else:
        w_D = resolve_rates(content, ctx, f"stages[{i}] rates")
        segments.append(Segment(start, end, w_D, w_D))
    return segments


def _at(segment: Segment, step: int) -> np.ndarray:
  frac = (step - segment.start) / (segment.end - segment.start)
  return segment.begin_D + (segment.end_D - segment.begin_D) * frac


@gin.configurable
def stages(stages: Sequence[tuple[Any, Any, Any]] = gin.REQUIRED) -> Schedule:  # pylint: disable=redefined-outer-name
  """Stages `(start, end, rates_or_schedule)` that tile training, e.g.
  `[(0.0, 0.8, 'mixjax_synthetic_mix'), (0.8, 1.0, {'math': 1.0, 'web': 1.0})]`. A nested
  schedule (e.g. a ramp) is read on the run's own steps, clipped to its stage."""
  return _Stages(tuple(tuple(s) if isinstance(s, list) else s for s in stages))


@gin.configurable
def upsample_at_end(base: Rates = gin.REQUIRED, fraction: float = 0.2,
                    factors: Mapping[str, float] = gin.REQUIRED) -> Schedule:
  """`base` for the first 1 - `fraction` of training, then `base` with `factors` applied
  (domain upsampling at the end of training; 10-20% works best in Blakeney et al., 2024)."""
  if not 0.0 < fraction <= 1.0:
    raise ScheduleError(f"upsample_at_end: fraction must be in (0, 1], got {fraction}.")
  stage_list = [(1.0 - fraction, 1.0, scaled_rates(base, factors))]
  if fraction < 1.0:
    stage_list.insert(0, (0.0, 1.0 - fraction, base))
  return _Stages(tuple(stage_list))


def context_for(mixture_or_task_name: str, total_steps: int, rows_per_step: int,
                sizes: Callable[[], Mapping[str, DomainSize]] = lambda: {}) -> MixtureContext:
  """The context of a registered mixture (or task): its tasks' domains, in registration order."""
  domain_tasks = pipeline.domain_tasks(mixture_or_task_name)  # one task per domain, checked
  return MixtureContext(tuple(domain_tasks), total_steps, rows_per_step, sizes,
                        {t: d for d, t in domain_tasks.items()})
