"""RegMix binary: `python -m mixjax.mixing.regmix --gin_file=gin/mixing/regmix.gin --output=DIR`.

Writes DIR/{weights.json, mixture.gin, report.json}; `--gin.X=Y` overrides as in mixjax.train.
"""

import json
import sys

from mixjax import gin_utils
from mixjax.mixing import regmix
import mixjax_tasks


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  outputs = [a for a in argv if a.startswith("--output=")]
  if not outputs:
    raise SystemExit("error: --output=DIR is required (where weights.json and mixture.gin go).")
  gin_utils.parse_and_bind([a for a in argv if not a.startswith("--output=")],
                           prog="mixjax.mixing.regmix")
  mixjax_tasks.register_all()
  result = regmix.run_regmix(outputs[-1][len("--output="):])
  print(regmix.format_report(result))
  print(json.dumps(result["weights"]))
  return result


if __name__ == "__main__":
  main()
