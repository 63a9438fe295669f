"""Evaluation binary: per-domain loss and every probe kind for one checkpoint of a run.

  python -m mixjax.eval --model_dir=DIR [--step=N] [--gin.EvalConfig.max_probes=200]

Reads the run's operative config (`DIR/config.gin`: task registrations, `EvalConfig`, `MeshConfig`)
and `DIR/run_configs.json` (model, data), restores the checkpoint (default: the newest) on the
run's mesh, and evaluates it as training does (`mixjax.eval.evaluator.Evaluator`). Prints the
metrics and writes `DIR/eval/step_<N>.json` with the keys of the training-time eval lines in
`metrics.jsonl`; for a step training evaluated, the numbers are the ones it logged.
"""

import argparse
import json
import os
import sys

from mixjax import console

console.quiet_start()  # before anything loads TensorFlow

import gin  # noqa: E402
import jax  # noqa: E402

from mixjax import gin_utils  # noqa: E402
from mixjax.launch import distributed  # noqa: E402
from mixjax.eval import evaluator  # noqa: E402
from mixjax.inference import restore  # noqa: E402
from mixjax.models import transformer  # noqa: E402
from mixjax.training import partitioning  # noqa: E402
from mixjax.training import run_dir  # noqa: E402
import mixjax_tasks  # noqa: E402


def evaluate_checkpoint(model_dir: str, step: int | None = None) -> dict:
  """`{"step": N, "eval/<domain>/loss": …, "probe/<domain>/<kind>/accuracy": …}` for one
  checkpoint, under the gin bindings in effect (the run's config.gin, parsed by `main`)."""
  mesh_config = partitioning.MeshConfig()
  run = restore.restore_run(model_dir, step, mesh_config)
  scorer = evaluator.Evaluator(transformer.build_model(run.model_config), run.mesh,
                               mesh_config.rules, run.data_config, evaluator.EvalConfig())
  return {"step": run.step, **{k: float(v) for k, v in scorer.evaluate(run.params).items()}}


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  bindings, rest = gin_utils.split_gin_overrides(argv)
  parser = argparse.ArgumentParser(prog="mixjax.eval", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True, help="the run's MODEL_DIR")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
  distributed.add_flags(parser)
  args = parser.parse_args(rest)
  try:
    distributed.initialize(distributed.config_from_args(args))
  except distributed.DistributedSetupError as e:
    parser.error(str(e))
  try:
    run_dir.check_local(args.model_dir, "--model_dir")
  except run_dir.RunDirError as e:
    raise SystemExit(f"error: {e}") from None
  config_gin = os.path.join(args.model_dir, "config.gin")
  if not os.path.exists(config_gin):
    raise SystemExit(f"error: {config_gin} not found: is {args.model_dir!r} the MODEL_DIR of a "
                     "mixjax training run?")
  gin.clear_config()
  gin_utils.parse_and_bind([f"--gin_file={config_gin}"] + [f"--gin_bindings={b}" for b in bindings],
                           prog="mixjax.eval")
  mixjax_tasks.register_all()  # with the run's task bindings (e.g. register_synthetic.num_docs)
  try:
    metrics = evaluate_checkpoint(args.model_dir, args.step)
  except FileNotFoundError as e:
    raise SystemExit(f"error: {e}") from None
  if jax.process_index() == 0:  # one host writes; every host computed the same metrics
    out_dir = os.path.join(args.model_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"step_{metrics['step']}.json")
    with open(path, "w") as f:
      json.dump(metrics, f, indent=1, sort_keys=True)
    print(f"step {metrics['step']}: " + "  ".join(
        f"{k}={v:.3f}" for k, v in sorted(metrics.items()) if k != "step"))
    print(f"wrote {path}")
  return metrics


if __name__ == "__main__":
  main()
