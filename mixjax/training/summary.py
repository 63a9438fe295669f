"""The end of a run: a short summary on the console, `summary.json` and the report PNG.

The summary gives the parameter count, each domain's validation loss at the first and the last
evaluation, each probe kind's accuracy ± its standard error against chance, the target tokens
trained on per domain, and where the run directory, TensorBoard logs and report are.
"""

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

from mixjax.training import compile as compile_lib
from mixjax.training import report as report_lib


def probe_stats(probes: Mapping[str, tuple]) -> dict[str, dict]:
  """{name: {"count", "chance"}} of an evaluator's probe sets (`Evaluator.probes`: name ->
  (batch, probe_index_N, is_answer_N)); chance is the mean of 1 / candidates over the probes."""
  stats = {}
  for name, (_, probe_index_N, _) in probes.items():
    _, candidates_P = np.unique(probe_index_N, return_counts=True)
    stats[name] = {"count": int(len(candidates_P)), "chance": float(np.mean(1.0 / candidates_P))}
  return stats


def standard_error(accuracy: float, count: int) -> float:
  """Binomial standard error of an accuracy measured on `count` probes."""
  return math.sqrt(accuracy * (1.0 - accuracy) / count) if count else float("nan")


def run_summary(lines: Sequence[dict], params_total: int, probes: Mapping[str, dict],
                model_dir: str) -> dict:
  """The summary's numbers (what `summary.json` holds) from a run's metrics lines."""
  evals = [line for line in lines if any(k.startswith(("eval/", "probe/")) for k in line)]
  trains = [line for line in lines if "loss" in line]
  first, last = (evals[0], evals[-1]) if evals else ({}, {})
  losses = {key.split("/")[1]: {"first": first.get(key), "last": value}
            for key, value in sorted(last.items()) if report_lib.EVAL_KEY.match(key)}
  accuracies = {}
  for key, value in sorted(last.items()):
    match = report_lib.PROBE_KEY.match(key)
    if match:
      stats = probes.get(match[1], {})
      accuracies[match[1]] = {"accuracy": value, **stats,
                              "stderr": standard_error(value, stats.get("count", 0))}
  tokens = {key.split("/")[1]: int(value) for key, value in sorted(trains[-1].items())
            if key.startswith("mixture/") and key.endswith("/tokens")} if trains else {}
  return {"step": max((line["step"] for line in lines), default=0),
          "params_total": int(params_total),
          "first_eval_step": first.get("step"), "last_eval_step": last.get("step"),
          "eval_loss": losses, "probes": {**{n: dict(s) for n, s in probes.items()},
                                          **accuracies},
          "tokens": tokens, "model_dir": model_dir,
          "tensorboard": os.path.join(model_dir, "tb"),
          "report": os.path.join(model_dir, report_lib.REPORT_NAME)}


def _count(n: float) -> str:
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if n >= scale:
      return f"{n / scale:.2f}{suffix}"
  return f"{n:.0f}"


def format_summary(summary: Mapping) -> str:
  """The console text of a summary (as `run_summary` returns it)."""
  out = [f"mixjax: run finished at step {summary['step']}",
         f"  parameters  {summary['params_total']:,} ({summary['params_total'] / 1e6:.2f}M)"]
  if summary["eval_loss"]:
    out.append(f"  validation loss (nats/token), step {summary['first_eval_step']} -> "
               f"{summary['last_eval_step']}:")
    width = max(map(len, summary["eval_loss"]))
    for domain, loss in summary["eval_loss"].items():
      out.append(f"    {domain:<{width}}  {loss['first']:.3f} -> {loss['last']:.3f}")
  scored = {n: p for n, p in summary["probes"].items() if "accuracy" in p}
  if scored:
    out.append(f"  probes at step {summary['last_eval_step']} (accuracy ± standard error, "
               "n probes, chance; above/below: by over 2 standard errors at chance):")
    width = max(map(len, scored))
    for name, probe in sorted(scored.items()):
      chance = f"{probe['chance']:.2f}" if "chance" in probe else "?"
      above = ""
      if "chance" in probe and probe.get("count"):  # binomial z against chance
        z = (probe["accuracy"] - probe["chance"]) / standard_error(probe["chance"], probe["count"])
        above = "  above chance" if z > 2 else ("  below chance" if z < -2 else "")
      out.append(f"    {name:<{width}}  {probe['accuracy']:.2f} ± {probe['stderr']:.2f} "
                 f"(n={probe.get('count', '?')}, chance {chance}){above}")
  if summary["tokens"]:
    total = sum(summary["tokens"].values())
    out.append(f"  tokens seen: {_count(total)} = " + ", ".join(
        f"{d} {_count(t)}" for d, t in summary["tokens"].items()))
  out += [f"  run directory  {summary['model_dir']}",
          f"  TensorBoard    tensorboard --logdir {summary['tensorboard']}",
          f"  report         {summary['report']}"]
  return "\n".join(out)


def write_summary(model_dir: str, summary: Mapping) -> str:
  path = os.path.join(model_dir, report_lib.SUMMARY_NAME)
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  return path


def finish_run(model_dir: str, params, probes: Mapping[str, tuple]) -> dict:
  """What `train()` does last on process 0: writes `summary.json` and `report.png` into the run
  directory, prints the summary, and returns it. `probes` are the evaluator's probe sets."""
  lines = report_lib.read_run_metrics(model_dir)
  summary = run_summary(lines, compile_lib.param_counts(params)["params_total"],
                        probe_stats(probes), model_dir)
  write_summary(model_dir, summary)
  if lines:
    report_lib.write_report(model_dir)
  print(format_summary(summary), flush=True)
  return summary
