"""The shared entry of the mixture-method binaries (`python -m mixjax.mixing.<method>`): parse
`--gin_file`/`--gin.X=Y` as mixjax.train does, require `--output=DIR`, run, print the report."""

import json
import sys
from typing import Callable

from mixjax import gin_utils


def main(argv, prog: str, run: Callable[[str], dict], format_report: Callable[[dict], str],
         register_tasks: Callable[[], None]) -> dict:
  """`register_tasks` (the binary's `mixjax_tasks.register_all`) runs after gin has bound its
  configs (e.g. `register_synthetic.num_docs`); the binary imports mixjax_tasks before parsing,
  so that the gin files may name its configurables."""
  argv = sys.argv[1:] if argv is None else argv
  outputs = [a for a in argv if a.startswith("--output=")]
  if not outputs:
    raise SystemExit("error: --output=DIR is required (where weights.json and mixture.gin go).")
  gin_utils.parse_and_bind([a for a in argv if not a.startswith("--output=")], prog=prog)
  register_tasks()
  result = run(outputs[-1][len("--output="):])
  print(format_report(result))
  print(json.dumps(result["weights"]))
  return result
