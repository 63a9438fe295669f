"""Inference binary: continue text or fill in `<X>` spans with a trained run's model, in batches,
with a KV cache (decode attention and sampling through the Pallas kernels on GPU/TPU).

  python -m mixjax.infer --model_dir=/tmp/mixjax_ul2 --mode=S2S --prompt="Q: 12 + 30 ="
  python -m mixjax.infer --model_dir=/tmp/mixjax_ul2 --mode=NLU \\
      --prompt="Libo Vend is a <X> living in Bergen."
  python -m mixjax.infer --model_dir=DIR --prompts_file=IN.jsonl --output=OUT.jsonl \\
      --temperature=0.8 --top_p=0.95 --batch_size=32
  python -m mixjax.infer --gin_file=gin/runs/infer.gin --gin.CHECKPOINT_PATH="'DIR'" \\
      --prompts_file=IN.jsonl --output=OUT.jsonl

IN.jsonl lines: {"prompt": TEXT, "mode"?: MODE}; OUT.jsonl lines: {"prompt", "completion",
"num_tokens", "stop_reason"} ("eos" or "max_new_tokens"). Modes: S2S (continue), NLU / NLG (span
infilling, UL2's mode tokens) for UL2 runs; an lm run takes none. Prompts are put in the run's
prompt format (the one its probes are scored in). Greedy is --temperature=0. A prompt longer than
the model's trained length is an error naming the limit; nothing is truncated or dropped.
Flags override gin bindings (`runner.InferConfig`, `sampling.SamplingConfig`).
"""

import argparse
import dataclasses
import sys

from mixjax import console

console.quiet_start()  # before anything loads TensorFlow

import jax  # noqa: E402

from mixjax import gin_utils  # noqa: E402
from mixjax.launch import distributed  # noqa: E402
from mixjax.inference import decoding  # noqa: E402
from mixjax.inference import restore  # noqa: E402
from mixjax.inference import runner  # noqa: E402
from mixjax.inference import sampling  # noqa: E402
from mixjax.training import partitioning  # noqa: E402


def infer(model_dir: str, prompts: list[str], mode: str | None = "S2S",
          max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0,
          batch_size: int = 16, **sampling_settings) -> list[str]:
  """Generates one completion per prompt on one device; returns them as text (for notebooks)."""
  config = sampling.SamplingConfig(temperature=temperature, seed=seed,
                                   max_new_tokens=max_new_tokens, **sampling_settings)
  run = restore.restore_run(model_dir)
  records = [runner.PromptRecord(p, None, f"prompt {i}") for i, p in enumerate(prompts)]
  default = mode if run.data_config.objective != "lm" else None
  return [c.completion for c in runner.PromptRunner(run)(records, config, batch_size, default,
                                                         progress=False)]


def _parser():
  p = argparse.ArgumentParser(prog="mixjax.infer", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", help="the run's MODEL_DIR (or gin CHECKPOINT_PATH)")
  p.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
  p.add_argument("--prompt", action="append", help="repeatable; completions go to stdout")
  p.add_argument("--prompts_file", help="JSONL of {\"prompt\", \"mode\"?}")
  p.add_argument("--output", help="JSONL of completions (with --prompts_file)")
  p.add_argument("--mode", choices=sorted(decoding.MODES))
  for name, kind in (("temperature", float), ("top_k", int), ("top_p", float),
                     ("min_p", float), ("seed", int), ("max_new_tokens", int)):
    p.add_argument(f"--{name}", type=kind)
  p.add_argument("--batch_size", type=int)
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--gin_search_paths", default="")
  p.add_argument("--no_progress", action="store_true")
  distributed.add_flags(p)
  return p


def _override(config, args, names):
  given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
  return dataclasses.replace(config, **given)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  bindings, rest = gin_utils.split_gin_overrides(argv)
  parser = _parser()
  args = parser.parse_args(rest)
  try:
    distributed.initialize(distributed.config_from_args(args))
  except distributed.DistributedSetupError as e:
    parser.error(str(e))
  if args.gin_file or bindings:
    gin_utils.parse_and_bind([f"--gin_file={f}" for f in args.gin_file or ["runs/infer.gin"]]
                             + [f"--gin_search_paths={args.gin_search_paths}"]
                             + [f"--gin_bindings={b}" for b in bindings], prog="mixjax.infer")
  try:
    config = _override(runner.InferConfig(), args, ("model_dir", "step", "mode", "batch_size"))
    settings = _override(sampling.SamplingConfig(), args, (
        "temperature", "top_k", "top_p", "min_p", "seed", "max_new_tokens"))
  except ValueError as e:
    parser.error(str(e))
  if config.batch_size < 1:
    parser.error(f"--batch_size={config.batch_size} must be >= 1.")
  if not config.model_dir:
    parser.error("--model_dir (or --gin.CHECKPOINT_PATH) is required.")
  if bool(args.prompt) == bool(args.prompts_file):
    parser.error("give --prompt TEXT (repeatable) or --prompts_file IN.jsonl, not both.")
  if args.prompts_file and not args.output:
    parser.error("--prompts_file needs --output OUT.jsonl.")
  try:
    records = (runner.read_prompts_file(args.prompts_file) if args.prompts_file else
               [runner.PromptRecord(p, None, f"--prompt {i + 1}") for i, p in enumerate(args.prompt)])
    run = restore.restore_run(config.model_dir, config.step, partitioning.MeshConfig())
    default = config.mode or ("S2S" if run.data_config.objective != "lm" else None)
    prompt_runner = runner.PromptRunner(run, config.attention_impl, config.sampler_impl)
    completions = prompt_runner(records, settings, config.batch_size, default,
                                progress=not args.no_progress)
  except (runner.PromptError, OSError) as e:  # OSError: a missing checkpoint, a URL as model_dir
    raise SystemExit(f"error: {e}") from None
  if jax.process_index() == 0:  # one host prints and writes; every host generated all rows
    print(prompt_runner.summary, file=sys.stderr)
    if args.output:
      runner.write_completions(args.output, completions)
    else:
      for c in completions:
        print(f"{c.prompt!r} -> {c.completion!r}")
  return completions


if __name__ == "__main__":
  main()
