"""Alignment binary: `python -m mixjax.mixing.alignment --gin_file=gin/mixing/alignment.gin
--output=DIR`. Writes DIR/{weights.json, mixture.gin, report.json}; `--gin.X=Y` overrides."""

from mixjax.mixing import binary
from mixjax.mixing.alignment import run
import mixjax_tasks


def main(argv=None):
  return binary.main(argv, "mixjax.mixing.alignment", run.run_alignment, run.format_report,
                     mixjax_tasks.register_all)


if __name__ == "__main__":
  main()
