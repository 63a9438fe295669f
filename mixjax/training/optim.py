"""Optimiser and learning-rate schedules (optax): AdamW, warmup+cosine or warmup-stable-decay."""

import dataclasses

import gin
import jax
import optax

SCHEDULES = ("cosine", "wsd", "constant")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 3e-3
  schedule: str = "cosine"          # cosine | wsd | constant
  warmup_steps: int = 50
  decay_fraction: float = 0.2       # wsd: share of training spent decaying to zero
  final_lr_fraction: float = 0.1    # cosine: floor as a fraction of the peak
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  grad_clip_norm: float = 1.0


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine decay, WSD (constant then linear decay) or constant."""
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
  peak = config.learning_rate
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, max(total_steps, warmup + 1), end_value=peak * config.final_lr_fraction)
  if config.schedule == "wsd":
    decay = max(int(round(total_steps * config.decay_fraction)), 1)
    stable = max(total_steps - warmup - decay, 0)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak),
         optax.linear_schedule(peak, 0.0, decay)],
        boundaries=[max(warmup, 1), max(warmup, 1) + stable])
  if config.schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)],
        boundaries=[max(warmup, 1)])
  raise ValueError(f"Unknown schedule {config.schedule!r}; valid: {', '.join(SCHEDULES)}.")


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """AdamW with global-norm clipping; weight decay only on matrices (not norms' scales)."""
  schedule = learning_rate_schedule(config, total_steps)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay,
                  mask=decay_mask),
  )
