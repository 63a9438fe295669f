"""Dry runs of every gin/models size on named TPU slices: per-device memory, fit, roofline MFU.

  python benchmarks/dry_run.py --json benchmarks/results/dry_run.json [--sizes 125m 8b]

Each row runs the train binary's `--dry_run` (the real step, compiled ahead of time through
libtpu's compile-only devices; `pip install -e '.[tpu]'`, no TPU needed) in its own process and
reads its `dry_run.json`. The JSON written here is flat: `<size>/<key>` for every reported figure.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# size -> (topology, batch rows, row length, MESH_SHAPE, extra gin bindings)
ROWS = {
    "125m": ("v5e:2x2", 32, 2048, "(1, -1, 1)", []),
    # XLA attention from 350m up: the compile skips layers x 3 Mosaic kernel compiles (minutes
    # each on 2 CPU cores); the Pallas kernel's own fit is tested at 32k-128k (test_compile).
    "350m": ("v5e:2x2", 32, 2048, "(1, -1, 1)", ["--gin.ATTENTION_IMPL='xla'"]),
    "1b": ("v5e:4x4", 64, 2048, "(1, -1, 1)", ["--gin.ATTENTION_IMPL='xla'"]),
    "3b": ("v5p:2x2x2", 32, 4096, "(1, -1, 1)", ["--gin.ATTENTION_IMPL='xla'"]),
    # XLA attention with full remat: one layer's T x T scores live at a time.
    "8b": ("v5p:4x4x4", 64, 4096, "(1, -1, 1)",
           ["--gin.ATTENTION_IMPL='xla'", "--gin.TransformerConfig.remat='full'"]),
}
KEYS = ("topology", "num_devices", "params_total", "tokens_per_step", "fits", "roofline_mfu",
        "roofline_step_seconds", "xla_flops_per_step", "flops_per_token", "remat",
        "attention_impl")


def command(size, model_dir):
  topology, batch, length, mesh, extra = ROWS[size]
  return [sys.executable, "-m", "mixjax.train", "--gin_file=gin/runs/pretrain.gin",
          f"--gin_file=gin/models/{size}.gin",
          "--gin.MIXTURE_OR_TASK_NAME='mixjax_synthetic_mix'", "--gin.TRAIN_STEPS=1000",
          f"--gin.MODEL_DIR='{model_dir}'", "--gin.TransformerConfig.vocab_size=32768",
          f"--gin.TASK_FEATURE_LENGTHS={{'targets': {length}}}", f"--gin.BATCH_SIZE={batch}",
          f"--gin.MESH_SHAPE={mesh}", *extra, "--dry_run", f"--topology={topology}"]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", required=True)
  parser.add_argument("--sizes", nargs="*", default=list(ROWS))
  args = parser.parse_args()
  flat = {}
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  print("| size | slice | params | tokens/step | peak GiB/device | fits | roofline MFU | "
        "compile s |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
  for size in args.sizes:
    with tempfile.TemporaryDirectory() as model_dir:
      start = time.perf_counter()
      result = subprocess.run(command(size, model_dir), cwd=repo, capture_output=True, text=True)
      seconds = time.perf_counter() - start
      if result.returncode not in (0, 4):
        sys.exit(f"{size}: dry run failed ({result.returncode}):\n{result.stderr[-3000:]}")
      with open(os.path.join(model_dir, "dry_run.json")) as f:
        report = json.load(f)
    for key in KEYS:
      flat[f"{size}/{key}"] = report[key]
    flat[f"{size}/peak_bytes_per_device"] = report["bytes_per_device"]["peak"]
    flat[f"{size}/wall_seconds"] = seconds
    flat[f"{size}/command"] = " ".join(command(size, "/tmp/dry_" + size)[1:])
    mfu = report["roofline_mfu"]
    print(f"| {size} | {report['topology']} | {report['params_total'] / 1e9:.2f}B | "
          f"{report['tokens_per_step']} | {report['bytes_per_device']['peak'] / 2**30:.2f} | "
          f"{report['fits']} | {'-' if mfu is None else f'{mfu:.2f}'} | {seconds:.0f} |",
          flush=True)
    _write(args.json, flat)  # after every row: a long sweep keeps what it measured


def _write(path, flat):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(flat, f, indent=2, sort_keys=True)


if __name__ == "__main__":
  main()
