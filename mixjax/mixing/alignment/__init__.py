"""Gradient alignment (DoGE / DGA style): reweight domains toward a target domain's gradient.

  python -m mixjax.mixing.alignment --gin_file=gin/mixing/alignment.gin --output=DIR
  (__main__.py; run.py: the source on a proxy, its time-averaged weights as the output)

The alignment of domain d is <g_d, g_target>, g_d the gradient of d's mean loss. All k of them
come from one `grad` and one `jax.jvp`: with g_target = grad of the target loss, the jvp of the
per-example losses in direction g_target gives <grad l_b, g_target> for every example b at once,
and <g_d, g_target> is the mean of those over d's examples (weighted by tokens). k backward
passes (the usual way) give the same numbers (tests/test_mixing_alignment.py).

`AlignmentSource` is a `WeightSource`: every `period` steps it takes the main run's params (from
`update(step, {"params": ...})`), scores its fixed per-domain probe rows and target rows, and
moves the weights multiplicatively, log w += step_size * alignment / (|alignment| max), then mixes
in `smoothing` of uniform. Its state (log weights) is checkpointed with the iterator, so a
resumed run continues with the same weights.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mixjax.mixing import sources
from mixjax.training import trainer


def example_losses(model, params, rows):
  """Per-example token-summed loss `[B]` and tokens `[B]` of packed rows."""
  loss_BT, weights_BT = trainer.token_losses(model, params, rows)
  return (loss_BT * weights_BT).sum(-1), weights_BT.sum(-1)


def domain_alignments(model, params, rows, domain_B: jax.Array, num_domains: int,
                      target_rows) -> jax.Array:
  """<g_d, g_target> `[D]` for every domain, by one grad and one jvp."""
  def target_loss(p):
    loss_B, tokens_B = example_losses(model, p, target_rows)
    return loss_B.sum() / jnp.maximum(tokens_B.sum(), 1.0)
  g_target = jax.grad(target_loss)(params)
  (_, tokens_B), (dloss_B, _) = jax.jvp(lambda p: example_losses(model, p, rows), (params,),
                                        (g_target,))
  onehot_BD = jax.nn.one_hot(domain_B, num_domains, dtype=jnp.float32)
  return (dloss_B @ onehot_BD) / jnp.maximum(tokens_B @ onehot_BD, 1.0)


def multiplicative_update(log_weights_D: np.ndarray, score_D: np.ndarray, step_size: float,
                          smoothing: float) -> tuple[np.ndarray, np.ndarray]:
  """log w += step_size * score / max|score|; returns (new log weights, smoothed weights)."""
  scale = max(float(np.max(np.abs(score_D))), 1e-12)
  log_weights_D = log_weights_D + step_size * score_D / scale
  log_weights_D = log_weights_D - np.max(log_weights_D)
  weights_D = np.exp(log_weights_D) / np.exp(log_weights_D).sum()
  return log_weights_D, (1 - smoothing) * weights_D + smoothing / len(weights_D)


class AlignmentSource(sources.WeightSource):
  """Online weights toward a target's gradient; `rows` hold probe rows of every domain
  (`domain_B` says which) and `target_rows` the target's."""

  def __init__(self, domains, model, rows: Mapping[str, np.ndarray], domain_B: np.ndarray,
               target_rows: Mapping[str, np.ndarray], period: int = 10, step_size: float = 0.5,
               smoothing: float = 0.05, initial: np.ndarray | None = None):
    self.domains = tuple(domains)
    self.period, self.step_size, self.smoothing = period, step_size, smoothing
    initial = np.ones(len(self.domains)) if initial is None else np.asarray(initial, float)
    self._log_weights_D = np.log(initial / initial.sum())
    self._weights_D = initial / initial.sum()
    self.history: list[np.ndarray] = []
    rows = {f: jnp.asarray(v) for f, v in rows.items()}
    target_rows = {f: jnp.asarray(v) for f, v in target_rows.items()}
    domain_B = jnp.asarray(domain_B)
    self._align = jax.jit(lambda params: domain_alignments(model, params, rows, domain_B,
                                                           len(self.domains), target_rows))

  def weights_D(self, step: int) -> np.ndarray:
    del step
    return self._weights_D

  def update(self, step: int, stats: Mapping[str, Any]) -> None:
    if step % self.period or "params" not in stats:
      return
    score_D = np.asarray(self._align(stats["params"]), np.float64)
    self._log_weights_D, self._weights_D = multiplicative_update(
        self._log_weights_D, score_D, self.step_size, self.smoothing)
    self.history.append(self._weights_D)

  def state(self) -> dict:
    return {"log_weights": self._log_weights_D.tolist(), "weights": self._weights_D.tolist()}

  def restore(self, state: Mapping) -> None:
    if state:
      self._log_weights_D = np.asarray(state["log_weights"], np.float64)
      self._weights_D = np.asarray(state["weights"], np.float64)
