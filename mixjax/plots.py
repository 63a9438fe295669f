"""A training run's report as one picture.

  python -m mixjax.plots MODEL_DIR [--out MODEL_DIR/report.png] [--window 20]

Reads `MODEL_DIR/metrics.jsonl` (and `summary.json`, for the probes' chance levels, once the run
has ended) and draws per-domain validation loss, probe accuracy against chance, scheduled vs
realised mixture weights (the realised share of rows as a trailing mean over `window` logged
steps, since a single batch holds whole rows) and tokens/s (`mixjax.training.report`). `--out`
picks the format by extension (.png, .svg, .pdf). Training writes the same report at the end.
"""

import argparse

from mixjax.training import report


def _positive_int(value: str) -> int:
  try:
    number = int(value)
  except ValueError:
    number = 0
  if number < 1:
    raise argparse.ArgumentTypeError(f"{value!r} is not an integer >= 1")
  return number


def main(argv=None):
  parser = argparse.ArgumentParser(prog="mixjax.plots", description=__doc__.splitlines()[0])
  parser.add_argument("model_dir")
  parser.add_argument("--out", default=None,
                      help=f"image path (default: MODEL_DIR/{report.REPORT_NAME})")
  parser.add_argument("--window", type=_positive_int, default=20,
                      help="logged steps averaged (realised weights), >= 1")
  args = parser.parse_args(argv)
  try:
    print(report.write_report(args.model_dir, args.out, args.window))
  except (report.PlotInputError, OSError) as e:
    parser.exit(2, f"mixjax.plots: error: {e}\n")
  except ValueError as e:  # matplotlib: an --out extension it has no writer for
    parser.exit(2, f"mixjax.plots: error: --out {args.out!r}: {e}\n")


if __name__ == "__main__":
  main()
