"""Weight sources: where the data iterator's per-step domain weights come from.

A source gives the normalised weights `[D]` of step `step` (`weights_D`), may take per-domain
training statistics (`update`, e.g. DoReMi's excess losses or gradient alignments) and has a
JSON-able `state` that is checkpointed with the data iterator, so a resumed run continues with
the same weights. A resolved schedule (static rates, stages, ramps) is the static source.
"""

import abc
from typing import Any, Mapping

import numpy as np


class WeightSource(abc.ABC):
  """Domain weights step by step; `domains` fixes the order of every `[D]` vector."""

  domains: tuple[str, ...]

  @abc.abstractmethod
  def weights_D(self, step: int) -> np.ndarray:
    """Normalised weights of the batch at 0-based `step` (the batch of train step `step + 1`)."""

  def update(self, step: int, stats: Mapping[str, Any]) -> None:
    """Takes training statistics after train step `step`; static sources ignore them."""
    del step, stats

  def state(self) -> dict:
    """JSON-able state to checkpoint (static sources have none)."""
    return {}

  def restore(self, state: Mapping) -> None:
    """Continues from a `state()`."""
    del state
