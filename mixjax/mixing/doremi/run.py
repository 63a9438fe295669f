"""The DoReMi binary's job: offline DoReMi on the run's mixture, the output contract, a report.

The reference is a proxy trained on the run's own mixture (the prior), or `reference_dir`, a
trained mixjax run directory whose per-token losses on the pools are cached on disk. DoReMi
needs no target; `target` (MIXING_TARGET) only names what the check reports: two proxies, one
on the prior and one on the result, trained side by side in one swarm.
"""

import time
from typing import Any

import gin
import numpy as np
from tqdm import tqdm

from mixjax import gin_utils
from mixjax.data import pipeline
from mixjax.mixing import doremi
from mixjax.mixing import output
from mixjax.mixing import proxies
from mixjax.mixing import swarm as swarm_lib
from mixjax.mixing import target as target_lib
from mixjax.mixing.doremi import reference
from mixjax.models import transformer
from mixjax.training import optim


def resolve_report_target(target: Any, domains: tuple[str, ...]) -> target_lib.ResolvedTarget:
  """MIXING_TARGET, or (unset) the mean of the domains' validation losses."""
  if target is None or target is gin.REQUIRED:
    target = {d: 1.0 for d in domains}
  return target_lib.resolve(target, domains)


@gin.configurable
def run_doremi(out_dir: str, config: doremi.DoReMiConfig | None = None,
               data: pipeline.DataConfig | None = None,
               proxy_model: transformer.TransformerConfig | None = None,
               proxy_optimizer: optim.OptimizerConfig | None = None,
               swarm_config: swarm_lib.SwarmConfig | None = None, proxy_length: int = 64,
               target: Any = None, reference_dir: str | None = None,
               reference_step: int | None = None, reference_cache_dir: str | None = None,
               check: bool = True, progress_bar: bool = True) -> dict:
  """Runs DoReMi; writes the output contract into `out_dir`; returns {"weights", "report"}."""
  start = time.perf_counter()
  config = config or doremi.DoReMiConfig()
  data = data or pipeline.DataConfig()
  gin_utils.check_required(data)
  swarm_config = swarm_config or swarm_lib.SwarmConfig()
  domains = tuple(pipeline.domain_tasks(data.mixture_or_task_name))
  resolved = resolve_report_target(target, domains)
  swarm = proxies.setup(data, swarm_config, proxy_length, proxy_model, proxy_optimizer,
                        resolved.eval_tasks).swarm
  prior_D = proxies.prior_weights(data, domains)
  steps = swarm_config.train_steps * (1 if reference_dir else 2)
  with tqdm(total=steps, desc="doremi proxies", unit="proxy-step", disable=not progress_bar,
            dynamic_ncols=True) as bar:
    ref_loss = (reference.pool_losses(reference_dir, swarm.pools.train, reference_step,
                                      reference_cache_dir) if reference_dir else None)
    found = doremi.run_offline(swarm, prior_D, config, ref_loss, on_chunk=bar.update)
  alpha_SD = found["alpha_SD"]
  report = {"method": "doremi", "estimator": config.estimator, "step_size": config.step_size,
            "smoothing": config.smoothing, "target": resolved.name,
            "reference": reference_dir or "proxy on the prior",
            "proxy_steps": found["proxy_steps"],
            "proxy_tokens": found["proxy_steps"] * swarm_config.batch_size * proxy_length,
            "prior": dict(zip(domains, prior_D.tolist())),
            "final_weights": dict(zip(domains, alpha_SD[-1].tolist())),
            "max_weight_over_time": float(alpha_SD.max())}
  if check:
    report["check"] = proxies.compare_on_proxies(swarm, resolved, {"prior": prior_D,
                                                                   "doremi": found["weights_D"]})
  report["seconds"] = time.perf_counter() - start
  weights = output.write(out_dir, dict(zip(domains, found["weights_D"])), "DoReMi", report)
  return {"weights": weights, "report": report}


def format_report(result: dict) -> str:
  r = result["report"]
  lines = [f"DoReMi ({r['estimator']}, step size {r['step_size']}, smoothing {r['smoothing']}): "
           f"{r['proxy_steps']} proxy-steps in {r['seconds']:.0f} s; reference: {r['reference']}",
           *proxies.format_tail(result, "doremi")]
  return "\n".join(lines)
