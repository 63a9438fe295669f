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
import os
import time

import mixjax_tasks  # noqa: F401  (registers the synthetic tasks)
from mixjax.experiments import arms as arms_lib
from mixjax.experiments import cli
from mixjax.experiments import summary
from mixjax.experiments import tables
from mixjax.mixing import schedules  # noqa: F401  (gin configurables)

BASELINE = "base"
_BASE_SCHEDULE = ("--gin.MIXTURE_SCHEDULE=@constant_schedule()",
                  "--gin.constant_schedule.rates=%MIXTURE_OR_TASK_NAME")


def arm_configs(args) -> dict[str, tuple[list[str], list[str]]]:
  """`{arm: (gin files, bindings)}` of the arms that branch from the trunk, baseline first."""
  upsampled = {
      f"up_{domain}": (args.gin_file + ["gin/upsample.gin"],
                       [f"--gin.upsample_at_end.fraction={args.fraction}",
                        f"--gin.upsample_at_end.factors={{'{domain}': {args.factor}}}"])
      for domain in args.domains}
  return {BASELINE: (args.gin_file, list(_BASE_SCHEDULE)), **upsampled}


def final_metrics(model_dir: str) -> dict[str, float]:
  """The last evaluation, with the per-domain token and epoch counters read by then."""
  counters = {k: v for k, v in arms_lib.last_train_line(model_dir).items()
              if k.endswith(("/tokens", "/epochs"))}
  return {**arms_lib.final_eval(model_dir), **counters}


def run_seed(args, seed: int) -> dict[str, dict[str, float]]:
  """Trunk to the branch step, then every arm to the end; final metrics per arm."""
  branch_step = int(round(args.steps * (1 - args.fraction)))
  root = os.path.join(args.workdir, f"seed{seed}")
  common = [f"--gin.SEED={seed}", f"--gin.TRAIN_STEPS={args.steps}",
            f"--gin.CHECKPOINT_PERIOD={branch_step}", "--gin.EVAL_PERIOD=0",
            "--gin.RunConfig.progress_bar=False", "--gin.MixingConfig.count_sizes=True",
            *[f"--gin.{b}" for b in args.gin]]
  trunk = os.path.join(root, "trunk")
  arms_lib.run_arm(trunk, branch_step, lambda: arms_lib.train_gin(
      args.gin_file, common + list(_BASE_SCHEDULE) +
      [f"--gin.MODEL_DIR='{trunk}'", f"--gin.RunConfig.stop_at_step={branch_step}"],
      prog="upsample_experiment"))
  results = {}
  for arm, (files, bindings) in arm_configs(args).items():
    model_dir = os.path.join(root, arm)
    if not arms_lib.has_checkpoint(model_dir, args.steps):
      arms_lib.branch(trunk, model_dir, branch_step)
      arms_lib.train_gin(files, common + bindings + [f"--gin.MODEL_DIR='{model_dir}'"],
                         prog="upsample_experiment")
    results[arm] = final_metrics(model_dir)
  return results


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.parser(__doc__.splitlines()[0], "/tmp/mixjax_upsample_experiment")
  parser.add_argument("--steps", type=int, default=600, help="TRAIN_STEPS of every arm")
  parser.add_argument("--fraction", type=float, default=0.2, help="share of steps upsampled")
  parser.add_argument("--domains", nargs="+", default=["math", "bios"],
                      help="one upsampled arm per domain")
  parser.add_argument("--factor", type=float, default=4.0)
  return cli.parse(parser, argv)

def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  start = time.time()
  flat = summary.summarise({seed: run_seed(args, seed) for seed in args.seeds}, BASELINE)
  flat.update({"steps": args.steps, "fraction": args.fraction, "factor": args.factor,
               "wall_seconds": time.time() - start})
  upsampled = [f"up_{d}" for d in args.domains]
  columns = [BASELINE, *upsampled, *(summary.difference_name(a, BASELINE) for a in upsampled)]
  rows = tables.metric_rows(flat, BASELINE, include=("eval/", "probe/"))
  print(tables.markdown(flat, columns, rows, args.seeds))
  summary.write_json(flat, args.json)
  return flat


if __name__ == "__main__":
  main()
