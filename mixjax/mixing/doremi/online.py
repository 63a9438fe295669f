"""Online DoReMi: the main run plays the DRO proxy, its domain weights moved every `period` steps.

`DoReMiSource` is a `WeightSource`. It holds fixed probe rows of every domain (`domain_B` says
which) and the reference's per-token losses on them (computed once, e.g. by
`reference.run_losses` from a run directory, which caches them on disk). Every `period` steps
it scores the probe rows with the main run's current params (the loop passes them to `update`),
takes the per-domain excess loss with the configured estimator and makes DoReMi's
exponentiated-gradient step, log alpha <- log_softmax(log alpha + step_size * lambda), training
on (1 - smoothing) alpha + smoothing / D. Its state (log alpha, the weights in use, their
running sum for the time average) is checkpointed with the data iterator, so a resumed run
continues with the same weights and batches as an uninterrupted one.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mixjax.mixing import doremi
from mixjax.mixing import sources
from mixjax.mixing.doremi import reference
from mixjax.training import trainer


class DoReMiSource(sources.WeightSource):
  """Online DoReMi weights for the main run; `ref_loss_BT` are the reference's per-token losses
  on `rows` (features `[B, T]`)."""

  def __init__(self, domains, model, rows: Mapping[str, np.ndarray], domain_B: np.ndarray,
               ref_loss_BT: np.ndarray, period: int = 10,
               config: doremi.DoReMiConfig = doremi.DoReMiConfig(),
               initial: np.ndarray | None = None):
    if period < 1:
      raise ValueError(f"DoReMiSource.period={period}: update every period >= 1 steps.")
    if np.shape(ref_loss_BT) != np.shape(rows["decoder_target_tokens"]):
      raise ValueError(f"The reference losses {np.shape(ref_loss_BT)} do not match the probe "
                       f"rows {np.shape(rows['decoder_target_tokens'])}; compute them on these "
                       "rows (reference.run_losses).")
    self.domains, self.period, self.config = tuple(domains), period, config
    initial = np.ones(len(self.domains)) if initial is None else np.asarray(initial, np.float64)
    self._log_alpha_D = np.log(initial / initial.sum())
    self._weights_D = initial / initial.sum()
    self._sum_D, self._updates = np.zeros(len(self.domains)), 0
    rows = {f: jnp.asarray(v) for f, v in rows.items()}
    ref_BT, domain_B = jnp.asarray(ref_loss_BT, jnp.float32), jnp.asarray(domain_B)

    def excess(params):
      loss_BT, weights_BT = trainer.token_losses(model, params, rows)
      return doremi.excess_losses(loss_BT, ref_BT, weights_BT, domain_B, len(self.domains),
                                  config.estimator)
    self._excess = jax.jit(excess)

  @classmethod
  def from_run_dir(cls, domains, model, rows, domain_B, reference_dir: str,
                   reference_step: int | None = None, cache_dir: str | None = None, **kwargs):
    """The reference is a trained run directory; its losses on `rows` come from the cache."""
    ref_loss_BT = reference.run_losses(reference_dir, rows, reference_step, cache_dir)
    return cls(domains, model, rows, domain_B, ref_loss_BT, **kwargs)

  def weights_D(self, step: int) -> np.ndarray:
    del step
    return self._weights_D

  def update(self, step: int, stats: Mapping[str, Any]) -> None:
    if step % self.period or "params" not in stats:
      return
    lam_D = self._excess(stats["params"])
    log_alpha_D, weights_D = doremi.update_weights(jnp.asarray(self._log_alpha_D, jnp.float32),
                                                   lam_D, self.config)
    self._log_alpha_D = np.asarray(log_alpha_D, np.float64)
    self._weights_D = np.asarray(weights_D, np.float64) / float(np.sum(weights_D))
    self._sum_D, self._updates = self._sum_D + self._weights_D, self._updates + 1

  def time_averaged(self) -> np.ndarray:
    """DoReMi's output: the mean of the weights over the updates so far (the start if none)."""
    return self._sum_D / self._updates if self._updates else self._weights_D

  def state(self) -> dict:
    return {"log_alpha": self._log_alpha_D.tolist(), "weights": self._weights_D.tolist(),
            "sum": self._sum_D.tolist(), "updates": self._updates}

  def restore(self, state: Mapping) -> None:
    if state:
      self._log_alpha_D = np.asarray(state["log_alpha"], np.float64)
      self._weights_D = np.asarray(state["weights"], np.float64)
      self._sum_D, self._updates = np.asarray(state["sum"], np.float64), int(state["updates"])
