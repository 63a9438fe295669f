"""Evaluating a trained arm's checkpoint on another mixture (and extra probe sets) than the one
it trained on, e.g. held-out validation files beside an ICLM training task."""

import dataclasses
from typing import Mapping, Sequence

from mixjax.eval import evaluator as evaluation
from mixjax.experiments import arms
from mixjax.inference import restore
from mixjax.models import transformer
from mixjax.training import partitioning


def evaluate_checkpoint(model_dir: str, mixture: str, eval_config: evaluation.EvalConfig,
                        extra_probes: Mapping[str, Sequence[dict]] | None = None
                        ) -> dict[str, float]:
  """Restores a run's newest checkpoint on one device and evaluates it on `mixture`'s validation
  splits and probes plus `extra_probes` (`{metric name: probes}`; empty sets are skipped).

  Returns `eval/<domain>/loss`, `eval/mean/loss` and `probe/<name>/accuracy` as floats."""
  model_config, data_config, params = restore.restore_for_inference(model_dir)
  mesh_config = partitioning.MeshConfig(shape=(1, 1, 1), num_devices=1)
  evaluator = evaluation.Evaluator(
      transformer.build_model(model_config), partitioning.make_mesh(mesh_config),
      mesh_config.rules, dataclasses.replace(data_config, mixture_or_task_name=mixture),
      eval_config, extra_probes={k: p for k, p in (extra_probes or {}).items() if p})
  return arms.with_mean_loss({k: float(v) for k, v in evaluator.evaluate(params).items()})
