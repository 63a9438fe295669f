"""DoReMi binary: `python -m mixjax.mixing.doremi --gin_file=gin/mixing/doremi.gin --output=DIR`.

Writes DIR/{weights.json, mixture.gin, report.json}; `--gin.X=Y` overrides as in mixjax.train.
"""

from mixjax.mixing import binary
from mixjax.mixing.doremi import run
import mixjax_tasks


def main(argv=None):
  return binary.main(argv, "mixjax.mixing.doremi", run.run_doremi, run.format_report,
                     mixjax_tasks.register_all)


if __name__ == "__main__":
  main()
