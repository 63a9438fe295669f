"""End-of-training domain upsampling on the embedded corpus, at quickstart scale, over seeds.

The recipe of Blakeney et al. (2024), "Does your data spark joy?": the base mixture for the
first 1 - fraction of training, then one domain upsampled for the rest, same token budget. Per
seed, one trunk run trains the base mixture (through the scheduled pipeline, constant schedule)
to the branch step and checkpoints; two arms continue from that checkpoint to the end, one on the
base mixture and one per `--domains` entry with gin/upsample.gin (that domain `--factor`x). All
arms share every batch before the branch (the schedules agree there, so their row counts do),
which is also how one branches a cooldown in practice. Reports per-domain eval loss and probe
accuracy of each arm, and its paired difference from the base arm.

  python benchmarks/upsample_experiment.py --seeds 0 1 2 --json benchmarks/results/upsample.json
"""

import argparse
import json
import os
import shutil
import time

import gin
import numpy as np

import mixjax_tasks  # noqa: F401  (registers the synthetic tasks)
from mixjax import gin_utils
from mixjax.mixing import schedules as mixtures  # noqa: F401  (gin configurables)
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib

def _train(gin_files, bindings):
  gin.clear_config()
  gin_utils.parse_and_bind([f"--gin_file={f}" for f in gin_files] + bindings,
                           prog="upsample_experiment")
  loop.train()


def _final_eval(model_dir) -> dict[str, float]:
  lines = metrics_lib.read_metrics(model_dir)
  final = [m for m in lines if any(k.startswith("eval/") for k in m)][-1]
  last_train = [m for m in lines if "loss" in m][-1]
  out = {k: v for k, v in final.items() if k.startswith(("eval/", "probe/"))}
  losses = [v for k, v in out.items() if k.startswith("eval/")]
  out["eval/mean/loss"] = float(np.mean(losses))
  out.update({k: v for k, v in last_train.items() if k.endswith(("/tokens", "/epochs"))})
  return out


def run_seed(args, seed: int) -> dict[str, dict[str, float]]:
  """Trunk to the branch step, then every arm to the end; final metrics per arm."""
  branch = int(round(args.steps * (1 - args.fraction)))
  root = os.path.join(args.workdir, f"seed{seed}")
  common = [f"--gin.SEED={seed}", f"--gin.TRAIN_STEPS={args.steps}",
            f"--gin.CHECKPOINT_PERIOD={branch}", "--gin.EVAL_PERIOD=0",
            "--gin.RunConfig.progress_bar=False", *[f"--gin.{b}" for b in args.gin]]
  base = ["--gin.MIXTURE_SCHEDULE=@constant_schedule()",
          "--gin.constant_schedule.rates=%MIXTURE_OR_TASK_NAME"]
  trunk = os.path.join(root, "trunk")
  if not os.path.exists(os.path.join(trunk, "checkpoints", str(branch))):
    _train(args.gin_file, common + base + [f"--gin.MODEL_DIR='{trunk}'",
                                           f"--gin.RunConfig.stop_at_step={branch}"])
  arms = [("base", args.gin_file, base)] + [
      (f"up_{domain}", args.gin_file + ["gin/upsample.gin"],
       [f"--gin.upsample_at_end.fraction={args.fraction}",
        f"--gin.upsample_at_end.factors={{'{domain}': {args.factor}}}"])
      for domain in args.domains]
  results = {}
  for arm, files, bindings in arms:
    model_dir = os.path.join(root, arm)
    if not os.path.exists(os.path.join(model_dir, "checkpoints", str(args.steps))):
      shutil.rmtree(model_dir, ignore_errors=True)
      shutil.copytree(trunk, model_dir)
      _train(files, common + bindings + [f"--gin.MODEL_DIR='{model_dir}'"])
    results[arm] = _final_eval(model_dir)
  return results


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, float]:
  """Flat JSON: every seed's figures, and mean/std over seeds of each arm and of its paired
  difference from the base arm (`<arm>-base`)."""
  flat = {}
  arms = list(next(iter(per_seed.values())))
  for seed, results in per_seed.items():
    for arm in arms:
      flat.update({f"seed{seed}/{arm}/{k}": v for k, v in results[arm].items()})
  for k in sorted(per_seed[next(iter(per_seed))]["base"]):
    values = {arm: np.asarray([per_seed[s][arm][k] for s in per_seed]) for arm in arms}
    values.update({f"{arm}-base": values[arm] - values["base"] for arm in arms[1:]})
    for name, v in values.items():
      flat[f"mean/{name}/{k}"] = float(v.mean())
      flat[f"std/{name}/{k}"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
  return flat


def print_table(flat: dict[str, float], seeds, domains):
  """Mean ± std over seeds; differences are paired by seed."""
  rows = sorted(k[len("mean/base/"):] for k in flat
                if k.startswith(("mean/base/eval/", "mean/base/probe/")))
  columns = ["base"] + [f"up_{d}" for d in domains] + [f"up_{d}-base" for d in domains]
  cell = lambda name, k: f"{flat[f'mean/{name}/{k}']:.3f} ± {flat[f'std/{name}/{k}']:.3f}"  # noqa: E731
  print(f"| metric ({len(seeds)} seeds: {', '.join(map(str, seeds))}) | {' | '.join(columns)} |")
  print("|" + " --- |" * (len(columns) + 1))
  for k in rows:
    print(f"| {k} | {' | '.join(cell(c, k) for c in columns)} |")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=600, help="TRAIN_STEPS of every arm")
  parser.add_argument("--fraction", type=float, default=0.2, help="share of steps upsampled")
  parser.add_argument("--domains", nargs="+", default=["math", "bios"],
                      help="one upsampled arm per domain")
  parser.add_argument("--factor", type=float, default=4.0)
  parser.add_argument("--gin_file", action="append", default=None,
                      help="run config (default: gin/quickstart.gin)")
  parser.add_argument("--gin", action="append", default=[], help="extra binding NAME=VALUE")
  parser.add_argument("--workdir", default="/tmp/mixjax_upsample_experiment")
  parser.add_argument("--json", default=None, help="write the flat results here")
  args = parser.parse_args(argv)
  args.gin_file = args.gin_file or ["gin/quickstart.gin"]
  start = time.time()
  per_seed = {seed: run_seed(args, seed) for seed in args.seeds}
  flat = summarise(per_seed)
  flat.update({"steps": args.steps, "fraction": args.fraction, "factor": args.factor,
               "wall_seconds": time.time() - start})
  print_table(flat, args.seeds, args.domains)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(flat, f, indent=1, sort_keys=True)
  return flat


if __name__ == "__main__":
  main()
