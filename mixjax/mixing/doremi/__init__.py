"""DoReMi (Xie et al., 2023): domain weights from a proxy trained with group DRO against a
reference model's per-token losses.

  python -m mixjax.mixing.doremi --gin_file=gin/mixing/doremi.gin --output=DIR   (__main__.py)

Offline (`run_offline`, the binary): (1) a reference proxy trains on the reference mixture (the
swarm, K = 1), or a trained mixjax run directory is the reference (`reference.py`); (2) its
per-token losses on every row of the shared pools are computed once and cached (gathered with
the rows, never recomputed per step; a run directory's are cached on disk); (3) a DRO proxy
trains on uniformly drawn rows; at each step the per-domain excess loss lambda_d (proxy minus
reference) moves the domain weights, alpha <- softmax(log alpha + step_size * lambda), smoothed
with `smoothing` of uniform, and the proxy descends the alpha-weighted per-domain losses; (4) the
output is the time-averaged alpha. Online (`online.DoReMiSource`): the main run itself plays the
DRO proxy and its weights move every `period` steps.

The excess-loss estimator is explicit, since public versions differ. With l_j the proxy's and
r_j the reference's loss of token j, and the sums over the batch's tokens of domain d:
- `clip_token` (default): sum_j max(l_j - r_j, 0) / #tokens. This is the paper's Algorithm 1
  (step "compute per-domain excess losses": the max sits inside the token sum, normalised by
  the domain's token count sum_{x in B_d} |x|), and the original repo's: a token the proxy
  already predicts better than the reference counts as 0, not as a credit against the others.
- `clip_domain_mean`: max(sum_j (l_j - r_j) / #tokens, 0), the clip applied to the per-domain
  mean (the Aioli port). The issue that asked for this module calls this "the paper's"; it is
  rather the unclipped minimax objective of the paper's Eq. 1 (the per-domain mean excess loss)
  with a clip added, and it lets negative tokens cancel positive ones, so it is kept as an
  option, not the default.
- `positive_tokens_mean`: sum_j max(l_j - r_j, 0) / #{j: l_j > r_j}, the mean over the tokens
  with positive excess only (Levanter's removed version); it ignores how many tokens are
  already learnt, so a domain with one hard token weighs as much as one with many.
"""

import dataclasses
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixjax.mixing import swarm as swarm_lib
from mixjax.training import trainer

ESTIMATORS = ("clip_token", "clip_domain_mean", "positive_tokens_mean")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DoReMiConfig:
  estimator: str = "clip_token"     # the paper's Algorithm 1 (see the module docstring)
  step_size: float = 1.0     # eta of the multiplicative (exponentiated-gradient) update
  smoothing: float = 1e-3    # c: mix of uniform into the weights at every step

  def __post_init__(self):
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"DoReMiConfig.estimator={self.estimator!r}; valid: "
                       f"{', '.join(ESTIMATORS)}.")


def excess_losses(loss_BT, ref_BT, weights_BT, domain_B, num_domains: int, estimator: str):
  """Per-domain excess loss lambda `[D]` (0 for domains absent from the batch); `weights_BT`
  masks the tokens that count (padding and unscored positions are 0)."""
  onehot_BD = jax.nn.one_hot(domain_B, num_domains, dtype=jnp.float32)
  excess_BT = (loss_BT - ref_BT) * weights_BT
  tokens_D = weights_BT.sum(-1) @ onehot_BD
  if estimator == "clip_token":
    return (jnp.maximum(excess_BT, 0.0).sum(-1) @ onehot_BD) / jnp.maximum(tokens_D, 1.0)
  if estimator == "clip_domain_mean":
    return jnp.maximum((excess_BT.sum(-1) @ onehot_BD) / jnp.maximum(tokens_D, 1.0), 0.0)
  if estimator == "positive_tokens_mean":
    positive_BT = (excess_BT > 0).astype(jnp.float32)
    return ((excess_BT * positive_BT).sum(-1) @ onehot_BD) / jnp.maximum(
        positive_BT.sum(-1) @ onehot_BD, 1.0)
  raise ValueError(f"Unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}.")


def update_weights(log_alpha_D, lam_D, config: DoReMiConfig):
  """One exponentiated-gradient step: (new log weights, the smoothed weights to train on)."""
  num_domains = log_alpha_D.shape[-1]
  log_alpha_D = jax.nn.log_softmax(log_alpha_D + config.step_size * lam_D)
  return log_alpha_D, (1 - config.smoothing) * jnp.exp(log_alpha_D) + (
      config.smoothing / num_domains)


def reference_losses(swarm: swarm_lib.Swarm, params, chunk_rows: int = 64) -> np.ndarray:
  """Per-token losses `[D, N, T]` of one model (`params` without a proxy axis) on every pool
  row: the cache the DRO proxy reads instead of running the reference each step."""
  train = swarm.pools.train
  num_domains, num_rows = train["decoder_target_tokens"].shape[:2]
  score = jax.jit(lambda p, rows: trainer.token_losses(swarm.model, p, rows)[0])
  flat = {f: v.reshape((num_domains * num_rows,) + v.shape[2:]) for f, v in train.items()}
  out = [np.asarray(score(params, {f: v[s:s + chunk_rows] for f, v in flat.items()}))
         for s in range(0, num_domains * num_rows, chunk_rows)]
  return np.concatenate(out).reshape(train["decoder_target_tokens"].shape)


def train_dro(swarm: swarm_lib.Swarm, ref_loss_DNT: np.ndarray, config: DoReMiConfig,
              init_seed: int = 0) -> np.ndarray:
  """Trains the DRO proxy for `swarm.config.train_steps`; returns its weights `[S, D]`."""
  num_domains = len(swarm.pools.domains)
  train = {f: jnp.asarray(v) for f, v in swarm.pools.train.items()}
  train["ref_loss"] = jnp.asarray(ref_loss_DNT, jnp.float32)
  uniform_KD = jnp.full((1, num_domains), 1.0 / num_domains)
  state = swarm.init(np.asarray(uniform_KD), [init_seed])
  params = jax.tree.map(lambda x: x[0], state.params)
  opt_state = jax.tree.map(lambda x: x[0], state.opt_state)
  tx, model, sc = swarm.tx, swarm.model, swarm.config

  def step(carry, t):
    params, opt_state, rows_KD, log_alpha_D = carry
    batch_K, rows_KD, domain_KB = swarm_lib.gather_batch(train, uniform_KD, rows_KD, t,
                                                         sc.data_seed, sc.batch_size)
    batch = jax.tree.map(lambda x: x[0], batch_K)
    domain_B = domain_KB[0]
    onehot_BD = jax.nn.one_hot(domain_B, num_domains, dtype=jnp.float32)
    loss_BT, weights_BT = trainer.token_losses(model, params, batch)
    lam_D = excess_losses(jax.lax.stop_gradient(loss_BT), batch["ref_loss"], weights_BT,
                          domain_B, num_domains, config.estimator)
    log_alpha_D, alpha_D = update_weights(log_alpha_D, lam_D, config)

    def objective(p):
      loss_BT, weights_BT = trainer.token_losses(model, p, batch)
      per_domain_D = ((loss_BT * weights_BT).sum(-1) @ onehot_BD) / jnp.maximum(
          weights_BT.sum(-1) @ onehot_BD, 1.0)
      return jnp.sum(alpha_D * per_domain_D)
    grads = jax.grad(objective)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, rows_KD, log_alpha_D), alpha_D

  log_alpha = jnp.full((num_domains,), -np.log(num_domains))
  run = jax.jit(lambda carry: jax.lax.scan(step, carry, jnp.arange(sc.train_steps)))
  _, alpha_SD = run((params, opt_state, state.rows_KD, log_alpha))
  return np.asarray(alpha_SD, np.float64)


def reference_proxy_losses(swarm: swarm_lib.Swarm, reference_weights_D: np.ndarray,
                           on_chunk=None) -> np.ndarray:
  """Trains the reference proxy (K = 1) on `reference_weights_D`; its per-token pool losses."""
  ref_state = swarm.init(np.asarray(reference_weights_D)[None])
  ref_state, _ = swarm.train(ref_state, np.asarray(reference_weights_D)[None], on_chunk=on_chunk)
  return reference_losses(swarm, jax.tree.map(lambda x: x[0], ref_state.params))


def run_offline(swarm: swarm_lib.Swarm, reference_weights_D: np.ndarray | None = None,
                config: DoReMiConfig = DoReMiConfig(), ref_loss_DNT: np.ndarray | None = None,
                on_chunk=None) -> dict:
  """Reference (a proxy trained on `reference_weights_D`, unless its losses `ref_loss_DNT` are
  given, e.g. from a run directory), then the DRO proxy; returns the time-averaged weights
  `weights_D`, the trajectory `alpha_SD` and the cost in proxy-steps and seconds."""
  start = time.perf_counter()
  proxy_steps = swarm.config.train_steps
  if ref_loss_DNT is None:
    if reference_weights_D is None:
      raise ValueError("DoReMi needs a reference: its mixture (a proxy is trained on it) or its "
                       "per-token losses on the pools (e.g. from a run directory).")
    ref_loss_DNT = reference_proxy_losses(swarm, reference_weights_D, on_chunk)
    proxy_steps *= 2
  alpha_SD = train_dro(swarm, ref_loss_DNT, config)
  if on_chunk:
    on_chunk(swarm.config.train_steps)
  weights_D = alpha_SD.mean(axis=0)
  return {"weights_D": weights_D / weights_D.sum(), "alpha_SD": alpha_SD,
          "proxy_steps": proxy_steps, "seconds": time.perf_counter() - start}
