"""RegMix binary: `python -m mixjax.mixing.regmix --gin_file=gin/mixing/regmix.gin --output=DIR`.

Writes DIR/{weights.json, mixture.gin, report.json}; `--gin.X=Y` overrides as in mixjax.train.
"""

from mixjax.mixing import binary
from mixjax.mixing import regmix
import mixjax_tasks


def main(argv=None):
  return binary.main(argv, "mixjax.mixing.regmix", regmix.run_regmix, regmix.format_report,
                     mixjax_tasks.register_all)


if __name__ == "__main__":
  main()
