"""The command line every experiment driver shares: seeds, the run config, where to work and
where to write the results."""

import argparse
from collections.abc import Sequence


def parser(description: str, workdir: str, seeds: Sequence[int] = (0, 1, 2)
           ) -> argparse.ArgumentParser:
  """A parser with `--seeds`, `--gin_file`, `--gin`, `--workdir` and `--json`; a driver adds
  its own flags and reads the result with `parse`."""
  out = argparse.ArgumentParser(description=description)
  out.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
  out.add_argument("--gin_file", action="append", default=None,
                   help="run config (default: gin/quickstart.gin)")
  out.add_argument("--gin", action="append", default=[], help="extra binding NAME=VALUE")
  out.add_argument("--workdir", default=workdir)
  out.add_argument("--json", default=None, help="write the flat results here")
  return out


def parse(parser_: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  """Parsed arguments; `gin_file` defaults to `["gin/quickstart.gin"]`."""
  args = parser_.parse_args(argv)
  args.gin_file = args.gin_file or ["gin/quickstart.gin"]
  return args
