"""`python -m mixjax.iclm --input FILES --output DIR` (see cli.py)."""

import sys

from mixjax.iclm import cli

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv[1:]))
