"""The alignment binary's job: `AlignmentSource` steering one proxy, its weights as the output.

A proxy (the swarm, K = 1) starts on the run's own mixture (the prior) and trains `period`
steps at a time on the source's current weights; after each chunk the source scores the
proxy's gradient alignment of every domain's probe rows (the first `probe_rows` of its train
pool) with the target's (MIXING_TARGET's validation rows) and moves the weights. The output is
the time average of the weights over the updates (as DoReMi's offline output), checked against
the prior by two proxies trained side by side.
"""

import time
from typing import Any

import gin
import jax
import numpy as np
from tqdm import tqdm

from mixjax import gin_utils
from mixjax.data import pipeline
from mixjax.mixing import alignment
from mixjax.mixing import output
from mixjax.mixing import proxies
from mixjax.mixing import swarm as swarm_lib
from mixjax.mixing import target as target_lib
from mixjax.models import transformer
from mixjax.training import optim


def probe_rows(pools: swarm_lib.Pools, rows_per_domain: int) -> tuple[dict, np.ndarray]:
  """The first `rows_per_domain` train rows of every domain `[D * P, T]` and their domains."""
  n = min(rows_per_domain, pools.rows_per_domain)
  num_domains = len(pools.domains)
  rows = {f: v[:, :n].reshape((num_domains * n,) + v.shape[2:]) for f, v in pools.train.items()}
  return rows, np.repeat(np.arange(num_domains, dtype=np.int32), n)


def steer_proxy(swarm: swarm_lib.Swarm, source: alignment.AlignmentSource, period: int,
                on_chunk=None) -> np.ndarray:
  """Trains one proxy `period` steps at a time on the source's weights, updating the source
  after each chunk; returns the weights of every update `[U, D]`."""
  state = swarm.init(source.weights_D(0)[None])
  history = []
  while state.step < swarm.config.train_steps:
    n = min(period, swarm.config.train_steps - state.step)
    state, _ = swarm.train(state, source.weights_D(state.step)[None], num_steps=n,
                           on_chunk=on_chunk)
    source.update(state.step, {"params": swarm_params(state)})
    history.append(np.asarray(source.weights_D(state.step)))
  return np.stack(history)


def swarm_params(state: swarm_lib.SwarmState):
  """The one proxy's params (without the proxy axis)."""
  return jax.tree.map(lambda x: x[0], state.params)


@gin.configurable
def run_alignment(out_dir: str, target: Any = gin.REQUIRED,
                  data: pipeline.DataConfig | None = None,
                  proxy_model: transformer.TransformerConfig | None = None,
                  proxy_optimizer: optim.OptimizerConfig | None = None,
                  swarm_config: swarm_lib.SwarmConfig | None = None, proxy_length: int = 64,
                  period: int = 10, step_size: float = 0.5, smoothing: float = 0.05,
                  rows_per_domain: int = 8, check: bool = True, progress_bar: bool = True
                  ) -> dict:
  """Runs gradient alignment for `target` on a proxy; writes the output contract into
  `out_dir` and returns {"weights", "report"}."""
  start = time.perf_counter()
  if target is gin.REQUIRED:
    raise ValueError("run_alignment.target is not set: bind MIXING_TARGET (a domain, a task or "
                     "a {domain: weight} dict), e.g. --gin.MIXING_TARGET=\"'math'\".")
  data = data or pipeline.DataConfig()
  gin_utils.check_required(data)
  swarm_config = swarm_config or swarm_lib.SwarmConfig()
  domains = tuple(pipeline.domain_tasks(data.mixture_or_task_name))
  resolved = target_lib.resolve(target, domains)
  swarm = proxies.setup(data, swarm_config, proxy_length, proxy_model, proxy_optimizer,
                        resolved.eval_tasks).swarm
  prior_D = proxies.prior_weights(data, domains)
  rows, domain_B = probe_rows(swarm.pools, rows_per_domain)
  source = alignment.AlignmentSource(domains, swarm.model, rows, domain_B,
                                     proxies.target_rows(swarm, resolved), period=1,
                                     step_size=step_size, smoothing=smoothing, initial=prior_D)
  with tqdm(total=swarm_config.train_steps, desc="alignment proxy", unit="proxy-step",
            disable=not progress_bar, dynamic_ncols=True) as bar:
    weights_UD = steer_proxy(swarm, source, period, on_chunk=bar.update)
  weights_D = weights_UD.mean(axis=0)
  report = {"method": "alignment", "target": resolved.name, "period": period,
            "step_size": step_size, "smoothing": smoothing, "updates": len(weights_UD),
            "proxy_steps": swarm_config.train_steps,
            "proxy_tokens": swarm_config.train_steps * swarm_config.batch_size * proxy_length,
            "prior": dict(zip(domains, prior_D.tolist())),
            "final_weights": dict(zip(domains, weights_UD[-1].tolist()))}
  if check:
    report["check"] = proxies.compare_on_proxies(swarm, resolved, {"prior": prior_D,
                                                                   "alignment": weights_D})
  report["seconds"] = time.perf_counter() - start
  weights = output.write(out_dir, dict(zip(domains, weights_D)), "gradient alignment", report)
  return {"weights": weights, "report": report}


def format_report(result: dict) -> str:
  r = result["report"]
  lines = [f"Gradient alignment for {r['target']}: {r['proxy_steps']} proxy-steps, "
           f"{r['updates']} updates in {r['seconds']:.0f} s",
           *proxies.format_tail(result, "alignment")]
  return "\n".join(lines)
