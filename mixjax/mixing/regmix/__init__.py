"""RegMix (Liu et al., 2024): train many small proxies on sampled mixtures, regress the target
loss on the weights, and search the regressor's minimum.

  python -m mixjax.mixing.regmix --gin_file=gin/mixing/regmix.gin --output=DIR   (__main__.py)

1. Sample: Dirichlet mixtures around the token prior (the run's own rates), concentration drawn
   log-uniformly per sample so that both sparse and near-prior mixtures appear, with per-domain
   caps and a repetition limit (epochs of a domain a proxy may read), by rejection.
2. Train: the proxy swarm (`swarm.py`) trains them, `proxies_per_swarm` at a time; every one is
   scored on the target's validation split. A few copies of the prior mixture with different
   init seeds measure the seed-to-seed noise.
3. Fit: the proxies are split (seeded) into train / validation / test. LightGBM is fitted on
   train with early stopping on validation (never on test); the log-linear mixing law
   L(w) = c + exp(b + t . w) (Ye et al., 2024) by Adam from many starts at once (vmapped), the
   start with the lowest train error kept. Each regressor's Spearman rank correlation on the
   held-out test proxies is reported.
4. Search: `num_search` mixtures from the same sampler are scored by the chosen regressor (the
   better on validation, unless named); the mean of the `top_k` best is the answer.
Writes DIR/{weights.json, mixture.gin, report.json} (mixjax.mixing.output).
"""

import dataclasses
import functools
import time
from typing import Any, Mapping

import gin
import jax
import jax.numpy as jnp
import lightgbm
import numpy as np
import optax
from tqdm import tqdm

from mixjax import gin_utils
from mixjax.data import pipeline
from mixjax.mixing import output
from mixjax.mixing import proxies
from mixjax.mixing import swarm as swarm_lib
from mixjax.mixing import target as target_lib
from mixjax.models import transformer
from mixjax.training import optim

REGRESSORS = ("lightgbm", "loglinear")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """RegMix's sampler: Dirichlet(prior * c), log c uniform in [log min, log max]."""
  min_concentration: float = 0.1
  max_concentration: float = 5.0
  max_weight: float | Mapping[str, float] = 1.0   # cap per domain (or one for all)
  max_epochs: float | None = None                  # repetition limit over a proxy's run
  max_tries: int = 100                             # rejection rounds before giving up


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RegMixConfig:
  target: Any = gin.REQUIRED              # MIXING_TARGET: domain, task or {domain: weight}
  num_proxies: int = 48
  proxies_per_swarm: int = 24             # K trained at once
  proxy_length: int = 64                  # proxy rows (tokens); the run's length is not needed
  seed_replicas: int = 3                  # init seeds of the prior mixture (seed noise)
  split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train / validation / test
  regressor: str = "best_validation"      # lightgbm | loglinear | best_validation
  num_search: int = 100_000
  top_k: int = 100
  loglinear_starts: int = 64
  loglinear_steps: int = 2000
  seed: int = 0


def sample_mixtures(prior_D: np.ndarray, n: int, config: SamplerConfig, rng: np.random.Generator,
                    epochs_per_weight_D: np.ndarray | None = None,
                    domains: tuple[str, ...] = ()) -> np.ndarray:
  """`n` mixtures `[n, D]` around `prior_D` that respect the caps and the repetition limit.

  `epochs_per_weight_D`: epochs of each domain a proxy reads per unit of weight (its rows read
  at weight 1 over the domain's rows); with `max_epochs`, weight_d <= max_epochs / that.
  """
  prior_D = np.asarray(prior_D, np.float64) / np.sum(prior_D)
  num_domains = len(prior_D)
  cap = config.max_weight
  cap_D = (np.asarray([float(cap.get(d, 1.0)) for d in domains]) if isinstance(cap, Mapping)
           else np.full(num_domains, float(cap)))
  if config.max_epochs is not None and epochs_per_weight_D is not None:
    cap_D = np.minimum(cap_D, config.max_epochs / np.maximum(epochs_per_weight_D, 1e-12))
  if cap_D.sum() < 1.0:
    raise ValueError(f"The caps {dict(zip(domains, cap_D.round(4)))} sum to {cap_D.sum():.3f} "
                     "< 1: no mixture satisfies them. Raise SamplerConfig.max_weight or "
                     "max_epochs (or train the proxies for fewer tokens).")
  kept = []
  for _ in range(config.max_tries):
    scale_N = np.exp(rng.uniform(np.log(config.min_concentration),
                                 np.log(config.max_concentration), size=(n, 1)))
    alpha_ND = np.maximum(prior_D[None] * scale_N * num_domains, 1e-3)
    mixtures_ND = rng.gamma(alpha_ND)
    mixtures_ND /= np.maximum(mixtures_ND.sum(1, keepdims=True), 1e-300)
    ok = np.all(mixtures_ND <= cap_D[None] + 1e-12, axis=1) & np.all(np.isfinite(mixtures_ND), 1)
    kept.extend(mixtures_ND[ok])
    if len(kept) >= n:
      return np.asarray(kept[:n])
  raise ValueError(f"Only {len(kept)} of {n} sampled mixtures met the caps "
                   f"{dict(zip(domains, cap_D.round(4)))} in {config.max_tries} rounds; loosen "
                   "SamplerConfig.max_weight / max_epochs or raise the concentration.")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation (average ranks for ties)."""
  def ranks(x):
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for value in np.unique(x):  # ties share their mean rank
      r[x == value] = r[x == value].mean()
    return r
  ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
  if ra.std() == 0 or rb.std() == 0:
    return float("nan")
  return float(np.corrcoef(ra, rb)[0, 1])


def split_indices(n: int, fractions, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A seeded train / validation / test split of `n` proxies (each part at least 2)."""
  order = np.random.default_rng(seed).permutation(n)
  n_val = max(2, int(round(n * fractions[1])))
  n_test = max(2, int(round(n * fractions[2])))
  if n - n_val - n_test < 3:
    raise ValueError(f"{n} proxies are too few to split into train/validation/test; train at "
                     "least 8 (RegMixConfig.num_proxies).")
  return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


class LightGBMRegressor:
  """LightGBM on the weights; boosting rounds chosen by early stopping on the validation split."""

  def __init__(self, seed: int = 0):
    self.params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 8,
                   "min_data_in_leaf": 2, "min_data_in_bin": 1, "seed": seed,
                   "deterministic": True, "num_threads": 1, "verbose": -1}
    self.booster = None

  def fit(self, x_train, y_train, x_val, y_val):
    train = lightgbm.Dataset(x_train, y_train, params={"min_data_in_bin": 1})
    val = lightgbm.Dataset(x_val, y_val, reference=train)
    self.booster = lightgbm.train(self.params, train, num_boost_round=1000, valid_sets=[val],
                                  callbacks=[lightgbm.early_stopping(50, verbose=False)])
    return self

  def predict(self, x) -> np.ndarray:
    return np.asarray(self.booster.predict(np.asarray(x),
                                           num_iteration=self.booster.best_iteration))


def _loglinear_predict(theta, x_ND):
  c, b, t_D = theta["c"], theta["b"], theta["t"]
  return c + jnp.exp(b + x_ND @ t_D)


class LogLinearLaw:
  """L(w) = c + exp(b + t . w), fitted by Adam from `num_starts` random starts at once."""

  def __init__(self, num_starts: int = 64, steps: int = 2000, seed: int = 0):
    self.num_starts, self.steps, self.seed = num_starts, steps, seed
    self.theta = None

  def fit(self, x_train, y_train, x_val=None, y_val=None):
    del x_val, y_val  # the law has no hyperparameter to tune on them
    x_ND, y_N = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, jnp.float32)
    num_domains = x_ND.shape[1]
    key_c, key_t = jax.random.split(jax.random.key(self.seed))
    low = float(jnp.min(y_N))
    # Starts: c below the best loss, t small; b so that the law meets the mean loss at w = 0.
    c_M = low - jax.random.uniform(key_c, (self.num_starts,), minval=0.05, maxval=2.0) * low
    t_MD = jax.random.normal(key_t, (self.num_starts, num_domains)) * 0.5
    b_M = jnp.log(jnp.maximum(jnp.mean(y_N) - c_M, 1e-3))
    tx = optax.adam(0.02)

    def loss(theta):
      return jnp.mean((_loglinear_predict(theta, x_ND) - y_N) ** 2)

    def fit_one(theta):
      def step(carry, _):
        theta, opt = carry
        value, grads = jax.value_and_grad(loss)(theta)
        updates, opt = tx.update(grads, opt, theta)
        return (optax.apply_updates(theta, updates), opt), value
      (theta, _), _ = jax.lax.scan(step, (theta, tx.init(theta)), None, length=self.steps)
      return theta, loss(theta)
    starts = {"c": c_M, "b": b_M, "t": t_MD}
    thetas, losses_M = jax.jit(jax.vmap(fit_one))(starts)
    losses_M = jnp.where(jnp.isfinite(losses_M), losses_M, jnp.inf)
    best = int(jnp.argmin(losses_M))
    self.theta = jax.tree.map(lambda v: v[best], thetas)
    self.train_mse = float(losses_M[best])
    return self

  def predict(self, x) -> np.ndarray:
    return np.asarray(_loglinear_predict(self.theta, jnp.asarray(x, jnp.float32)))


def make_regressor(name: str, config: RegMixConfig):
  if name == "lightgbm":
    return LightGBMRegressor(config.seed)
  if name == "loglinear":
    return LogLinearLaw(config.loglinear_starts, config.loglinear_steps, config.seed)
  raise ValueError(f"Unknown regressor {name!r}; valid: {', '.join(REGRESSORS)} (or "
                   "best_validation).")


def fit_and_search(weights_ND: np.ndarray, loss_N: np.ndarray, config: RegMixConfig,
                   search_ND: np.ndarray) -> dict:
  """Fits each regressor, reports held-out Spearman, and averages the top-k of the search."""
  train, val, test = split_indices(len(loss_N), config.split_fractions, config.seed)
  fitted, report = {}, {}
  for name in REGRESSORS:
    model = make_regressor(name, config).fit(weights_ND[train], loss_N[train],
                                             weights_ND[val], loss_N[val])
    fitted[name] = model
    report[f"{name}/validation_spearman"] = spearman(model.predict(weights_ND[val]), loss_N[val])
    report[f"{name}/test_spearman"] = spearman(model.predict(weights_ND[test]), loss_N[test])
  chosen = config.regressor
  if chosen == "best_validation":
    chosen = max(REGRESSORS, key=lambda n: np.nan_to_num(report[f"{n}/validation_spearman"],
                                                         nan=-2.0))
  elif chosen not in REGRESSORS:
    raise ValueError(f"RegMixConfig.regressor={chosen!r}; valid: {', '.join(REGRESSORS)}, "
                     "best_validation.")
  predicted_S = fitted[chosen].predict(search_ND)
  top = np.argsort(predicted_S, kind="stable")[:config.top_k]
  weights_D = search_ND[top].mean(axis=0)
  report.update({"regressor": chosen, "num_train": len(train), "num_validation": len(val),
                 "num_test": len(test),
                 "predicted_target_loss": float(fitted[chosen].predict(weights_D[None])[0]),
                 "best_proxy_target_loss": float(loss_N.min())})
  return {"weights_D": weights_D / weights_D.sum(), "report": report}


@gin.configurable
def run_regmix(out_dir: str, config: RegMixConfig | None = None,
               data: pipeline.DataConfig | None = None,
               proxy_model: transformer.TransformerConfig | None = None,
               proxy_optimizer: optim.OptimizerConfig | None = None,
               swarm_config: swarm_lib.SwarmConfig | None = None,
               sampler: SamplerConfig | None = None, progress_bar: bool = True) -> dict:
  """Runs RegMix on the run's mixture for `config.target`; writes the output contract into
  `out_dir` and returns {"weights": {domain: weight}, "report": {...}}."""
  start = time.perf_counter()
  config = config or RegMixConfig()
  data = data or pipeline.DataConfig()
  gin_utils.check_required(data)
  if config.target is gin.REQUIRED:
    raise ValueError("RegMixConfig.target is not set: bind MIXING_TARGET (a domain, a task or "
                     "a {domain: weight} dict), e.g. --gin.MIXING_TARGET=\"'math'\".")
  swarm_config = swarm_config or swarm_lib.SwarmConfig()
  sampler = sampler or SamplerConfig()
  domains = tuple(pipeline.domain_tasks(data.mixture_or_task_name))
  resolved = target_lib.resolve(config.target, domains)
  swarm = proxies.setup(data, swarm_config, config.proxy_length, proxy_model, proxy_optimizer,
                        resolved.eval_tasks).swarm
  pools = swarm.pools

  rng = np.random.default_rng(config.seed)
  prior_D = proxies.prior_weights(data, domains)
  epochs_per_weight_D = (swarm_config.train_steps * swarm_config.batch_size
                         / pools.rows_per_domain) * np.ones(len(domains))
  weights_ND = sample_mixtures(prior_D, config.num_proxies, sampler, rng, epochs_per_weight_D,
                               domains)
  replicas_RD = np.repeat(prior_D[None], config.seed_replicas, axis=0)
  all_weights = np.concatenate([weights_ND, replicas_RD])
  seeds = [swarm_config.init_seed] * config.num_proxies + [
      swarm_config.init_seed + 1 + r for r in range(config.seed_replicas)]
  total = len(all_weights) * swarm_config.train_steps
  with tqdm(total=total, desc="regmix proxies", unit="proxy-step", disable=not progress_bar,
            dynamic_ncols=True) as bar:
    loss_KS = swarm_lib.run_swarm(swarm, all_weights, config.proxies_per_swarm, seeds,
                                  on_chunk=bar.update)
  target_K = resolved.loss_K(loss_KS)
  loss_N, replica_R = target_K[:config.num_proxies], target_K[config.num_proxies:]
  search_ND = sample_mixtures(prior_D, config.num_search, sampler, rng, epochs_per_weight_D,
                              domains)
  found = fit_and_search(weights_ND, loss_N, config, search_ND)
  report = {"method": "regmix", "target": resolved.name, **found["report"],
            "seed_noise_std": float(np.std(replica_R, ddof=1)) if len(replica_R) > 1 else None,
            "prior_target_loss": float(np.mean(replica_R)) if len(replica_R) else None,
            "proxy_loss_spread_std": float(np.std(loss_N)),
            "num_proxies": config.num_proxies, "proxy_steps": swarm_config.train_steps,
            "proxy_tokens": total * swarm_config.batch_size * config.proxy_length,
            "prior": dict(zip(domains, prior_D.tolist())), "seconds": time.perf_counter() - start,
            "proxies": [{"weights": dict(zip(domains, w.tolist())), "target_loss": float(l)}
                        for w, l in zip(weights_ND, loss_N)]}
  weights = output.write(out_dir, dict(zip(domains, found["weights_D"])), "RegMix", report)
  return {"weights": weights, "report": report}


def format_report(result: dict) -> str:
  r = result["report"]
  lines = [f"RegMix for {r['target']}: {r['num_proxies']} proxies x {r['proxy_steps']} steps "
           f"in {r['seconds']:.0f} s",
           f"  held-out Spearman: lightgbm {r['lightgbm/test_spearman']:.3f}, log-linear "
           f"{r['loglinear/test_spearman']:.3f} (test, {r['num_test']} proxies); chose "
           f"{r['regressor']} (validation)",
           f"  target loss: prior {r['prior_target_loss']:.4f} +- {r['seed_noise_std'] or 0:.4f} "
           f"(seed std), best proxy {r['best_proxy_target_loss']:.4f}, predicted at the result "
           f"{r['predicted_target_loss']:.4f}",
           "  weights: " + ", ".join(f"{d} {w:.3f}" for d, w in result["weights"].items())]
  return "\n".join(lines)
