"""Running an experiment's arms: train from gin files or config dataclasses, branch from another
run's checkpoint, and read an arm's final metrics back from its run directory."""

import json
import os
import shutil
from typing import Callable, Mapping, Sequence

import gin
import numpy as np

from mixjax import gin_utils
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib


def train_gin(gin_files: Sequence[str], bindings: Sequence[str], prog: str = "experiment",
              extra_probes: Mapping[str, Sequence[dict]] | None = None) -> dict:
  """Trains one run from gin files plus `--gin.NAME=VALUE` bindings (later ones win), with a
  clean gin config; returns `loop.train`'s final metrics."""
  gin.clear_config()
  gin_utils.parse_and_bind([f"--gin_file={f}" for f in gin_files] + list(bindings), prog=prog)
  return loop.train(extra_probes=extra_probes)


def train_configs(**configs) -> dict:
  """Trains one run from config dataclasses (`loop.train`'s keywords); returns its final metrics.
  Gin is cleared first so that no binding of an earlier arm leaks into this one."""
  gin.clear_config()
  return loop.train(**configs)


def has_checkpoint(model_dir: str, step: int) -> bool:
  """Whether `model_dir` holds a checkpoint at `step` (an arm that got there is not rerun)."""
  return os.path.isdir(os.path.join(model_dir, "checkpoints", str(step)))


def run_arm(model_dir: str, final_step: int, train: Callable[[], object]) -> None:
  """Calls `train()` unless `model_dir` already has its final checkpoint; returns None.

  A run directory without one resumes from its newest checkpoint (the loop's own resume)."""
  if not has_checkpoint(model_dir, final_step):
    train()


def branch(trunk_dir: str, model_dir: str, step: int) -> None:
  """Makes `model_dir` a copy of `trunk_dir` as it stood at `step`: that checkpoint alone and
  the metrics lines up to it, so training there continues from the trunk's step `step` (model,
  optimiser and data iterator); replaces whatever `model_dir` held. Returns None."""
  if not has_checkpoint(trunk_dir, step):
    raise FileNotFoundError(f"No checkpoint at step {step} in {trunk_dir}; train the trunk to "
                            f"that step first (checkpoint period or stop_at_step={step}).")
  checkpoints_dir = os.path.join(os.path.abspath(trunk_dir), "checkpoints")

  def later_steps(directory, names):
    if os.path.abspath(directory) != checkpoints_dir:
      return []
    return [n for n in names if n.isdigit() and int(n) != step]
  shutil.rmtree(model_dir, ignore_errors=True)
  shutil.copytree(trunk_dir, model_dir, ignore=later_steps)
  metrics_path = os.path.join(model_dir, "metrics.jsonl")
  if os.path.exists(metrics_path):
    kept = [m for m in metrics_lib.read_metrics(model_dir) if m["step"] <= step]
    with open(metrics_path, "w") as f:
      f.writelines(json.dumps(m) + "\n" for m in kept)


def with_mean_loss(metrics: Mapping[str, float]) -> dict[str, float]:
  """`metrics` plus `eval/mean/loss`, the unweighted mean of its `eval/<domain>/loss` values."""
  losses = [v for k, v in metrics.items() if k.startswith("eval/") and k != "eval/mean/loss"]
  return {**metrics, "eval/mean/loss": float(np.mean(losses))}


def final_eval(model_dir: str) -> dict[str, float]:
  """The `eval/` and `probe/` metrics of a run's last evaluation, plus `eval/mean/loss`."""
  lines = [m for m in metrics_lib.read_metrics(model_dir) if any(k.startswith("eval/") for k in m)]
  if not lines:
    raise ValueError(f"{model_dir}/metrics.jsonl holds no evaluation; train with an eval split.")
  return with_mean_loss({k: v for k, v in lines[-1].items() if k.startswith(("eval/", "probe/"))})


def last_train_line(model_dir: str) -> dict[str, float]:
  """A run's last logged training line (it carries `loss` and the `mixture/...` counters)."""
  return [m for m in metrics_lib.read_metrics(model_dir) if "loss" in m][-1]
