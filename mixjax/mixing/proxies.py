"""What the proxy-based methods (RegMix, DoReMi, alignment) share: the proxies' data and swarm,
the run's prior weights, and a check of found weights against the prior on proxies.

The proxies read the run's mixture at their own length and batch (`proxy_length`,
`SwarmConfig.batch_size`), with the run's vocabulary, objective and layout; their model is a
small `proxy/TransformerConfig` sized from that vocabulary.
"""

import dataclasses
from typing import Mapping

import numpy as np

from mixjax import vocab as vocab_lib
from mixjax.data import pipeline
from mixjax.mixing import schedules
from mixjax.mixing import swarm as swarm_lib
from mixjax.mixing import target as target_lib
from mixjax.models import transformer
from mixjax.training import optim


@dataclasses.dataclass(frozen=True)
class ProxySetup:
  domains: tuple[str, ...]
  data: pipeline.DataConfig       # the proxies' data config
  swarm: swarm_lib.Swarm


def setup(data: pipeline.DataConfig, swarm_config: swarm_lib.SwarmConfig, proxy_length: int,
          proxy_model: transformer.TransformerConfig | None,
          proxy_optimizer: optim.OptimizerConfig | None,
          eval_tasks: Mapping[str, str] | None = None) -> ProxySetup:
  """The proxies' data config (the run's mixture at the proxies' length and batch), pools (the
  domains' validation splits and `eval_tasks` as eval sets) and swarm."""
  proxy_data = dataclasses.replace(data, task_feature_lengths={"targets": proxy_length},
                                   batch_size=swarm_config.batch_size, schedule=None)
  pools = swarm_lib.build_pools(proxy_data, swarm_config, eval_tasks)
  model = dataclasses.replace(proxy_model or transformer.TransformerConfig(),
                              vocab_size=vocab_lib.embedding_size(proxy_data.vocabulary))
  swarm = swarm_lib.Swarm(model, proxy_optimizer or optim.OptimizerConfig(), pools, swarm_config)
  return ProxySetup(pools.domains, proxy_data, swarm)


def prior_weights(data: pipeline.DataConfig, domains: tuple[str, ...]) -> np.ndarray:
  """The run's own mixture weights `[D]` (its schedule's first step, or the registered rates)."""
  ctx = schedules.context_for(data.mixture_or_task_name, 1, data.batch_size)
  spec = data.schedule if data.schedule is not None else data.mixture_or_task_name
  resolved = (spec if isinstance(spec, schedules.Schedule)
              else schedules.constant_schedule(spec)).resolve(ctx)
  return np.asarray([dict(zip(ctx.domains, resolved.weights_D(0)))[d] for d in domains])


def target_rows(swarm: swarm_lib.Swarm, resolved: target_lib.ResolvedTarget) -> dict:
  """The eval rows of the target's sets, each row's loss weights scaled by its set's target
  weight (so their token mean is the target loss, up to the sets' token counts)."""
  weight_E = np.asarray(resolved.weights_S)[swarm.pools.eval_set_E]
  keep = weight_E > 0
  rows = {f: v[keep] for f, v in swarm.pools.eval.items()}
  rows["decoder_loss_weights"] = (rows["decoder_loss_weights"].astype(np.float32)
                                  * weight_E[keep, None].astype(np.float32))
  return rows


def compare_on_proxies(swarm: swarm_lib.Swarm, resolved: target_lib.ResolvedTarget,
                       weights: Mapping[str, np.ndarray]) -> dict:
  """Trains one proxy per named mixture (in one swarm) and returns each one's target loss and
  per-eval-set losses: {name: {"target_loss": x, "<set>/loss": y, ...}}."""
  names = list(weights)
  loss_KS = swarm_lib.run_swarm(swarm, np.stack([np.asarray(weights[n]) for n in names]))
  target_K = resolved.loss_K(loss_KS)
  return {n: {"target_loss": float(target_K[k]),
              **{f"{s}/loss": float(loss_KS[k, i]) for i, s in enumerate(swarm.pools.eval_sets)}}
          for k, n in enumerate(names)}


def format_tail(result: dict, method: str) -> list[str]:
  """The report lines the proxy methods share: the check, the final and the output weights."""
  r = result["report"]
  return [*format_check(r, method),
          "  final weights: " + ", ".join(f"{d} {w:.3f}" for d, w in r["final_weights"].items()),
          "  weights (time average): " + ", ".join(f"{d} {w:.3f}"
                                                    for d, w in result["weights"].items())]


def format_check(report: dict, method: str) -> list[str]:
  """The report line of `compare_on_proxies` (none when the check was not run)."""
  if "check" not in report:
    return []
  prior, found = report["check"]["prior"], report["check"][method]
  return [f"  check on proxies ({report['target']}): target loss prior "
          f"{prior['target_loss']:.4f}, {method} {found['target_loss']:.4f} "
          f"({found['target_loss'] - prior['target_loss']:+.4f})"]
