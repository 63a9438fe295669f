"""Sampling settings and the sampler dispatch: the fused Pallas sampler on GPU/TPU, the sort-based
reference on CPU (the kernel's interpreter is far slower there); both draw from the same law
(`tests/test_sampling.py`)."""

import dataclasses

import gin
import jax
import jax.numpy as jnp

from mixjax.kernels import sampling as sampling_lib

SAMPLER_IMPLS = ("auto", "xla", "pallas")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """What `generate` draws: temperature 0 is greedy; top_k 0, top_p 1 and min_p 0 are off."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  min_p: float = 0.0
  seed: int = 0
  max_new_tokens: int = 64

  def __post_init__(self):
    checks = [
        ("temperature", self.temperature, self.temperature >= 0, ">= 0 (0 is greedy)"),
        ("top_k", self.top_k, self.top_k >= 0, ">= 0 (0 is off)"),
        ("top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1] (1 is off)"),
        ("min_p", self.min_p, 0 <= self.min_p <= 1, "in [0, 1] (0 is off)"),
        ("max_new_tokens", self.max_new_tokens, self.max_new_tokens >= 1, ">= 1"),
    ]
    bad = [f"{name}={value} must be {valid}" for name, value, ok, valid in checks if not ok]
    if bad:
      raise ValueError("Bad sampling settings: " + "; ".join(bad) + ".")


def resolve_impl(impl: str) -> str:
  """`auto`: `pallas` on GPU/TPU, `xla` (the reference) on CPU."""
  if impl not in SAMPLER_IMPLS:
    raise ValueError(f"Unknown sampler impl {impl!r}; valid: {SAMPLER_IMPLS}.")
  if impl == "auto":
    return "xla" if jax.default_backend() == "cpu" else "pallas"
  return impl


def sample(key, logits_BV, temperature_B, top_k_B, top_p_B, min_p_B, *, impl="auto"):
  """int32 `[B]` tokens, one per row, each row with its own settings (`[B]` arrays)."""
  fn = sampling_lib.sample if resolve_impl(impl) == "pallas" else sampling_lib.reference_sample
  return fn(key, logits_BV, temperature=temperature_B, top_k=top_k_B, top_p=top_p_B,
            min_p=min_p_B).astype(jnp.int32)
