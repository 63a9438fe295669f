"""Continued pre-training on the embedded corpus: replay ratio × re-warm peak, over seeds.

Per seed, a base model pretrains on four domains (the mixture's own rates with `--new_domain` at
0). Each arm then continues from the base's final checkpoint (`INIT_FROM`, gin/cpt.gin: fresh
AdamW, linear re-warm to the arm's peak, cosine re-decay) on the new domain, with a share
`ratio` of its rows replayed from the base's four-domain mixture. Same steps and tokens in every
arm. Reports, against the base (paired by seed): the new domain's loss (what CPT gains) and the
old domains' mean loss (what it forgets), i.e. the critical-mixture-ratio trade-off; a plot puts
one against the other.

  python benchmarks/cpt_experiment.py --seeds 0 1 --json benchmarks/results/cpt.json \
      --plot benchmarks/results/cpt.png
"""

import argparse
import os
import time

import numpy as np
import seqio

import mixjax_tasks  # noqa: F401  (registers the synthetic tasks)
from mixjax.data import tasks
from mixjax.experiments import arms as arms_lib
from mixjax.experiments import summary
from mixjax.experiments import tables
from mixjax.mixing import schedules  # noqa: F401  (gin configurables)

BASELINE = "base"
MIXTURE = "mixjax_synthetic_mix"


def arm_name(ratio: float, peak: float) -> str:
  return f"replay{ratio:g}_peak{peak:g}"


def old_rates(new_domain: str) -> dict[str, float]:
  """The mixture's own rates over its domains, the new domain left out."""
  mixture = seqio.get_mixture_or_task(MIXTURE)
  rates = {tasks.domain_of(t.name): mixture.get_rate(t) for t in mixture.tasks}
  if new_domain not in rates:
    raise SystemExit(f"error: --new_domain={new_domain!r}; valid: {sorted(rates)}.")
  return {d: r for d, r in rates.items() if d != new_domain}


def arm_metrics(model_dir: str, new_domain: str) -> dict[str, float]:
  """The last evaluation, plus `new/loss` (the new domain) and `old/loss` (the others' mean)."""
  final = arms_lib.final_eval(model_dir)
  old = [v for k, v in final.items() if k.startswith("eval/") and k.endswith("/loss")
         and k not in (f"eval/{new_domain}/loss", "eval/mean/loss")]
  return {**{k: v for k, v in final.items() if k.startswith("eval/")},
          "new/loss": final[f"eval/{new_domain}/loss"], "old/loss": float(np.mean(old))}


def run_seed(args, seed: int) -> dict[str, dict[str, float]]:
  root = os.path.join(args.workdir, f"seed{seed}")
  replay = old_rates(args.new_domain)
  common = [f"--gin.SEED={seed}", "--gin.EVAL_PERIOD=0", "--gin.RunConfig.progress_bar=False",
            *[f"--gin.{b}" for b in args.gin]]
  base = os.path.join(root, BASELINE)
  arms_lib.run_arm(base, args.base_steps, lambda: arms_lib.train_gin(
      args.gin_file, common + [
          f"--gin.MODEL_DIR='{base}'", f"--gin.TRAIN_STEPS={args.base_steps}",
          f"--gin.CHECKPOINT_PERIOD={args.base_steps}",
          "--gin.MIXTURE_SCHEDULE=@constant_schedule()",
          f"--gin.constant_schedule.rates={replay}"], prog="cpt_experiment"))
  results = {BASELINE: arm_metrics(base, args.new_domain)}
  for peak in args.peaks:
    for ratio in args.ratios:
      model_dir = os.path.join(root, arm_name(ratio, peak))
      arms_lib.run_arm(model_dir, args.cpt_steps, lambda: arms_lib.train_gin(
          args.gin_file + ["gin/cpt.gin"], common + [
              f"--gin.MODEL_DIR='{model_dir}'", f"--gin.INIT_FROM='{base}'",
              f"--gin.TRAIN_STEPS={args.cpt_steps}", f"--gin.CHECKPOINT_PERIOD={args.cpt_steps}",
              f"--gin.CPT_RATES={{'{args.new_domain}': 1.0}}", f"--gin.REPLAY_RATES={replay}",
              f"--gin.REPLAY_RATIO={ratio}", f"--gin.REWARM_PEAK={peak}",
              f"--gin.REWARM_STEPS={args.rewarm_steps}"], prog="cpt_experiment"))
      results[arm_name(ratio, peak)] = arm_metrics(model_dir, args.new_domain)
  return results


def plot(flat: dict, args, path: str) -> None:
  """New-domain loss against forgetting (old domains' loss change), one line per peak."""
  import matplotlib  # pylint: disable=import-outside-toplevel  (only when a plot is asked for)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for peak in args.peaks:
    names = [summary.difference_name(arm_name(r, peak), BASELINE) for r in args.ratios]
    x = [flat[f"mean/{n}/old/loss"] for n in names]
    y = [flat[f"mean/{arm_name(r, peak)}/new/loss"] for r in args.ratios]
    ax.errorbar(x, y, xerr=[flat[f"std/{n}/old/loss"] for n in names],
                yerr=[flat[f"std/{arm_name(r, peak)}/new/loss"] for r in args.ratios],
                marker="o", capsize=3, label=f"re-warm peak {peak:g}")
    for xi, yi, r in zip(x, y, args.ratios):
      ax.annotate(f"{r:.0%}", (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
  ax.axhline(flat[f"mean/{BASELINE}/new/loss"], color="grey", ls="--", lw=1,
             label=f"base ({args.new_domain} never seen)")
  ax.set_xlabel("forgetting: old domains' mean loss − base's (nats/byte)")
  ax.set_ylabel(f"new domain ({args.new_domain}) loss (nats/byte)")
  ax.set_title(f"Continued pre-training: replay share (labels), {len(args.seeds)} seeds")
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  parser.add_argument("--new_domain", default="prose")
  parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.05, 0.25, 0.5])
  parser.add_argument("--peaks", type=float, nargs="+", default=[3e-3, 1e-3],
                      help="re-warm peak learning rates (the base trains at 3e-3)")
  parser.add_argument("--base_steps", type=int, default=400)
  parser.add_argument("--cpt_steps", type=int, default=200)
  parser.add_argument("--rewarm_steps", type=int, default=20)
  parser.add_argument("--num_docs", type=int, default=4000, help="embedded corpus size per domain")
  parser.add_argument("--gin_file", action="append", default=None,
                      help="run config (default: gin/runs/pretrain.gin + gin/models/tiny.gin)")
  parser.add_argument("--gin", action="append", default=[], help="extra binding NAME=VALUE")
  parser.add_argument("--workdir", default="/tmp/mixjax_cpt_experiment")
  parser.add_argument("--json", default=None, help="write the flat results here")
  parser.add_argument("--plot", default=None, help="write the trade-off plot (PNG) here")
  args = parser.parse_args(argv)
  args.gin_file = args.gin_file or ["gin/runs/pretrain.gin", "gin/models/tiny.gin"]
  args.gin = args.gin or [
      f"MIXTURE_OR_TASK_NAME='{MIXTURE}'", "TASK_FEATURE_LENGTHS={'targets': 128}",
      "BATCH_SIZE=16", "OptimizerConfig.warmup_steps=20",
      "EvalConfig.num_batches=4", "EvalConfig.batch_size=32", "EvalConfig.max_probes=20"]
  return args


def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  mixjax_tasks.synthetic_tasks.register_synthetic(num_docs=args.num_docs)
  start = time.time()
  flat = summary.summarise({seed: run_seed(args, seed) for seed in args.seeds}, BASELINE)
  flat.update({"base_steps": args.base_steps, "cpt_steps": args.cpt_steps,
               "num_docs": args.num_docs,
               "wall_seconds": time.time() - start})
  arms = [arm_name(r, p) for p in args.peaks for r in args.ratios]
  print(tables.markdown(flat, [BASELINE, *arms], ["new/loss", "old/loss"], args.seeds))
  print()
  print(tables.markdown(flat, [summary.difference_name(a, BASELINE) for a in arms],
                        ["new/loss", "old/loss"], args.seeds))
  summary.write_json(flat, args.json)
  if args.plot:
    plot(flat, args, args.plot)
  return flat


if __name__ == "__main__":
  main()
