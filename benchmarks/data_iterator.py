"""CPU cost of the batch iterator alone (no model): setup (domain-size counting) and batches.

  python benchmarks/data_iterator.py --steps 600 --json OUT.json   # the quickstart's data

Measured 2026-12-01 under load (numbers in the README's quickstart section): setup 20.7 CPU-s,
600 batches 22.4 CPU-s for the quickstart mixture (16 rows x 256 bytes).
"""

import argparse
import json
import time

import mixjax_tasks  # noqa: F401  (registers the synthetic tasks)
from mixjax.data import pipeline
from mixjax.mixing import stream


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--mixture", default="mixjax_synthetic_mix")
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  config = pipeline.DataConfig(args.mixture, {"targets": args.length}, args.batch_size)
  cpu0, wall0 = time.process_time(), time.perf_counter()
  batches = stream.make_batch_iterator(config, 0, None, args.steps)
  cpu1, wall1 = time.process_time(), time.perf_counter()
  for _ in range(args.steps):
    next(batches)
  cpu2, wall2 = time.process_time(), time.perf_counter()
  result = {"setup_cpu_s": cpu1 - cpu0, "setup_wall_s": wall1 - wall0,
            "batches_cpu_s": cpu2 - cpu1, "batches_wall_s": wall2 - wall1, "steps": args.steps}
  print(json.dumps(result, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
