"""Mixture methods head to head: uniform, temperature, RegMix, DoReMi and gradient alignment at
equal main-run tokens on the embedded corpus, over seeds.

Each method runs once (its own seed 0) through its binary's job and gin file
(gin/mixing/{regmix,doremi,alignment}.gin, for MIXING_TARGET, by default the testbed target of
3 parts bios to 1 part math) and writes its weights; uniform (equal weights) and temperature
(token counts ** (1 / T)) need no search. Per seed, one main run (the quickstart's model and
gin, `--steps` x `--batch` x `--length`) trains on each arm's mixture; every arm of a seed shares
that seed's init and data seed. Reported per arm: the target loss (the target task's validation
rows scored by the final checkpoint), each domain's validation loss and their mean, as paired
differences from uniform over seeds; and each method's own cost (its wall seconds, and its
proxies' tokens) as a fraction of one main run's.

  python benchmarks/mixing_experiment.py --seeds 0 1 2 --json benchmarks/results/mixing.json
"""

import argparse
import json
import os
import time

import gin
import jax
import numpy as np

import mixjax_tasks
from mixjax import gin_utils
from mixjax.data import pipeline
from mixjax.experiments import arms as arms_lib
from mixjax.experiments import summary
from mixjax.experiments import tables
from mixjax.inference import restore
from mixjax.mixing import output
from mixjax.mixing import schedules  # noqa: F401  (gin configurables of the arms)
from mixjax.mixing import swarm as swarm_lib
from mixjax.mixing.alignment import run as alignment_run
from mixjax.mixing.doremi import reference
from mixjax.mixing.doremi import run as doremi_run
from mixjax.mixing import regmix

BASELINE = "uniform"
METHODS = {  # name: (gin file, job)
    "regmix": ("gin/mixing/regmix.gin", regmix.run_regmix),
    "doremi": ("gin/mixing/doremi.gin", doremi_run.run_doremi),
    "alignment": ("gin/mixing/alignment.gin", alignment_run.run_alignment),
}


def run_method(name: str, out_dir: str, bindings) -> dict:
  """The method's job with its gin file (reused when `out_dir` already holds its report)."""
  path = os.path.join(out_dir, "report.json")
  if not os.path.exists(path):
    gin_file, job = METHODS[name]
    if name != "regmix":  # the binaries' check (two more proxies) is no part of the method
      bindings = [*bindings, f"run_{name}.check=False"]
    gin.clear_config()
    gin_utils.parse_and_bind([f"--gin_file={gin_file}", *[f"--gin.{b}" for b in bindings]],
                             prog="mixing_experiment")
    mixjax_tasks.register_all()
    job(out_dir, progress_bar=False)
    gin.clear_config()
  with open(path) as f:
    report = json.load(f)
  with open(os.path.join(out_dir, "weights.json")) as f:
    return {"weights": json.load(f), "report": report}


def target_loss(model_dir: str, task: str, num_rows: int, cache_dir: str) -> float:
  """Token mean loss of the run's final checkpoint on `task`'s first validation rows."""
  data = restore.run_data_config(model_dir)
  rows = swarm_lib.validation_rows(data, task, num_rows)
  loss_NT = reference.run_losses(model_dir, rows, cache_dir=cache_dir)
  weights_NT = rows["decoder_loss_weights"].astype(np.float64)
  return float((loss_NT * weights_NT).sum() / weights_NT.sum())


def arm_bindings(args, arm: str, method_dirs: dict) -> tuple[list[str], list[str]]:
  if arm == BASELINE:
    return [], ["MIXTURE_SCHEDULE=@constant_schedule()",
                "constant_schedule.rates={" + ", ".join(f"'{d}': 1.0" for d in args.domains)
                + "}"]
  if arm == "temperature":
    return [], ["MIXTURE_SCHEDULE=@constant_schedule()",
                "constant_schedule.rates=@temperature_rates()",
                f"temperature_rates.temperature={args.temperature}"]
  return [os.path.join(method_dirs[arm], "mixture.gin")], []


def run_seed(args, seed: int, method_dirs: dict, seconds: dict) -> dict:
  results = {}
  for arm in [BASELINE, "temperature", *METHODS]:
    model_dir = os.path.join(args.workdir, f"seed{seed}", arm)
    files, bindings = arm_bindings(args, arm, method_dirs)
    common = [f"SEED={seed}", f"TRAIN_STEPS={args.steps}", f"BATCH_SIZE={args.batch}",
              f"TASK_FEATURE_LENGTHS={{'targets': {args.length}}}", f"MODEL_DIR='{model_dir}'",
              f"CHECKPOINT_PERIOD={args.steps}", "EVAL_PERIOD=0", "RunConfig.progress_bar=False",
              f"EvalConfig.max_probes={args.max_probes}", *args.gin]
    start = time.time()
    arms_lib.run_arm(model_dir, args.steps, lambda: arms_lib.train_gin(
        [args.gin_file, *files], [f"--gin.{b}" for b in bindings + common],
        prog="mixing_experiment"))
    seconds.setdefault(arm, []).append(time.time() - start)
    metrics = {k: v for k, v in arms_lib.final_eval(model_dir).items()
               if k.startswith("eval/") and k.endswith("/loss")}
    metrics["target/loss"] = target_loss(model_dir, args.target_task, args.target_rows,
                                         os.path.join(args.workdir, "target_cache"))
    results[arm] = metrics
    print(f"seed {seed} {arm}: target {metrics['target/loss']:.4f}, mean "
          f"{metrics['eval/mean/loss']:.4f} ({seconds[arm][-1]:.0f} s)", flush=True)
  return results


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=600, help="TRAIN_STEPS of every main run")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--temperature", type=float, default=3.0)
  parser.add_argument("--max_probes", type=int, default=10, help="probes per kind (not reported)")
  parser.add_argument("--target_task", default="mixjax_synthetic_target_bios3_math1")
  parser.add_argument("--target_rows", type=int, default=64)
  parser.add_argument("--gin_file", default="gin/quickstart.gin", help="main-run config")
  parser.add_argument("--gin", action="append", default=[], help="main-run binding NAME=VALUE")
  parser.add_argument("--method_gin", action="append", default=[],
                      help="binding NAME=VALUE for every method's job (e.g. smaller proxies)")
  parser.add_argument("--workdir", default="/tmp/mixjax_mixing_experiment")
  parser.add_argument("--json", default=None, help="write the flat results here")
  args = parser.parse_args(argv)
  args.domains = ("bios", "code", "math", "prose", "web")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  start = time.time()
  # Fifteen main runs of one shape: compile each program once (XLA's persistent cache).
  jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  method_dirs = {m: os.path.join(args.workdir, "methods", m) for m in METHODS}
  found = {m: run_method(m, d, [f"MIXING_TARGET='{args.target_task}'", *args.method_gin])
           for m, d in method_dirs.items()}
  for m, f in found.items():
    print(f"{m}: {f['report']['seconds']:.0f} s, weights "
          + ", ".join(f"{d} {w:.3f}" for d, w in f["weights"].items()), flush=True)
  seconds: dict = {}
  flat = summary.summarise({s: run_seed(args, s, method_dirs, seconds) for s in args.seeds},
                           BASELINE)
  main_seconds = float(np.mean(seconds[BASELINE]))
  main_tokens = args.steps * args.batch * args.length
  for m, f in found.items():
    r = f["report"]
    flat[f"cost/{m}/seconds"] = r["seconds"]
    flat[f"cost/{m}/fraction_of_main_seconds"] = r["seconds"] / main_seconds
    flat[f"cost/{m}/fraction_of_main_tokens"] = r["proxy_tokens"] / main_tokens
    flat.update({f"weights/{m}/{d}": w for d, w in f["weights"].items()})
  flat.update({"steps": args.steps, "batch": args.batch, "length": args.length,
               "temperature": args.temperature, "main_run_seconds": main_seconds,
               "wall_seconds": time.time() - start})
  arms = [BASELINE, "temperature", *METHODS]
  columns = [BASELINE, *(summary.difference_name(a, BASELINE) for a in arms[1:])]
  rows = ["target/loss", *tables.metric_rows(flat, BASELINE, include=("eval/",))]
  print(tables.markdown(flat, columns, rows, args.seeds))
  print("cost (fraction of one main run, seconds / tokens): " + ", ".join(
      f"{m} {flat[f'cost/{m}/fraction_of_main_seconds']:.2f} / "
      f"{flat[f'cost/{m}/fraction_of_main_tokens']:.2f}" for m in METHODS))
  summary.write_json(flat, args.json)
  return flat


if __name__ == "__main__":
  main()
