"""Conversion binary: Hugging Face Llama / Qwen2 / Mistral checkpoints to and from run directories.

  python -m mixjax.convert --from_hf=HF_DIR --model_dir=DIR [--sequence_length=256] \\
      [--mixture_or_task_name=mixjax_synthetic_mix] [--extra_ids=100]
  python -m mixjax.convert --to_hf=OUT_DIR --model_dir=DIR [--step=N] [--max_shard_size=5GB] \\
      [--dtype=float32]

`--from_hf` writes a run directory (`mixjax.compat.hf.import_hf`) that `mixjax.infer`,
`mixjax.eval` and continued pre-training read like any other; `--to_hf` writes `config.json`,
`model.safetensors` (sharded past --max_shard_size) and the tokenizer, loadable with
`transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR)`. config.json fields mixjax does not
implement are refused with an error naming them.
"""

import argparse
import re
import sys

from mixjax.compat import hf
from mixjax.launch import distributed

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30}


def parse_size(text: str) -> int:
  """'5GB', '200MB', '1024' -> bytes."""
  match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?I?B?)\s*", text.upper())
  if not match or match.group(2) not in _UNITS:
    raise ValueError(f"--max_shard_size={text!r}; give a size such as 5GB, 200MB or 1024.")
  return int(float(match.group(1)) * _UNITS[match.group(2)])


def _parser():
  p = argparse.ArgumentParser(prog="mixjax.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--from_hf", help="an HF model directory (config.json, *.safetensors, tokenizer)")
  p.add_argument("--to_hf", help="the HF model directory to write")
  p.add_argument("--model_dir", required=True, help="the mixjax run directory")
  p.add_argument("--step", type=int, help="--to_hf: checkpoint step (default: the newest)")
  p.add_argument("--max_shard_size", default="5GB", help="--to_hf: shard size (e.g. 5GB)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
  defaults = hf.ImportConfig()
  p.add_argument("--sequence_length", type=int, default=defaults.sequence_length)
  p.add_argument("--mixture_or_task_name", default=defaults.mixture_or_task_name)
  p.add_argument("--batch_size", type=int, default=defaults.batch_size)
  p.add_argument("--extra_ids", type=int)
  distributed.add_flags(p)
  return p


def main(argv=None):
  parser = _parser()
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if bool(args.from_hf) == bool(args.to_hf):
    parser.error("give --from_hf=HF_DIR or --to_hf=OUT_DIR (one of them).")
  try:
    distributed.initialize(distributed.config_from_args(args))
  except distributed.DistributedSetupError as e:
    parser.error(str(e))
  try:
    if args.from_hf:
      cfg = hf.import_hf(args.from_hf, args.model_dir, hf.ImportConfig(
          args.mixture_or_task_name, args.sequence_length, args.batch_size, args.extra_ids))
      print(f"wrote {args.model_dir} ({cfg.num_layers} layers, d_model {cfg.d_model}, "
            f"{cfg.vocab_size} vocabulary rows)")
    else:
      files = hf.export_hf(args.model_dir, args.to_hf, args.step,
                           parse_size(args.max_shard_size), args.dtype)
      print("wrote " + ", ".join(files))
  except (hf.UnsupportedConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  main()
