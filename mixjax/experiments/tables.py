"""Markdown tables from a flat summary (`summary.summarise`): one row per metric, one column per
arm or paired difference, cells `mean ± std` over seeds."""

from typing import Mapping, Sequence


def metric_rows(flat: Mapping[str, float], arm: str, include: Sequence[str] = (),
                exclude: Sequence[str] = ()) -> list[str]:
  """The metrics summarised for `arm`, sorted: those starting with one of `include` (all when
  empty) and none of `exclude`."""
  prefix = f"mean/{arm}/"
  names = sorted(k[len(prefix):] for k in flat if k.startswith(prefix))
  return [k for k in names if (not include or k.startswith(tuple(include)))
          and not k.startswith(tuple(exclude))]


def cell(flat: Mapping[str, float], name: str, metric: str, digits: int = 3) -> str:
  """`mean ± std` of one arm (or difference) and metric."""
  return f"{flat[f'mean/{name}/{metric}']:.{digits}f} ± {flat[f'std/{name}/{metric}']:.{digits}f}"


def markdown(flat: Mapping[str, float], columns: Sequence[str], rows: Sequence[str],
             seeds: Sequence[int]) -> str:
  """A markdown table (no trailing newline) whose header names the seeds summarised."""
  header = (f"| metric ({len(seeds)} seeds: {', '.join(map(str, seeds))}) | "
            f"{' | '.join(columns)} |")
  lines = [header, "|" + " --- |" * (len(columns) + 1)]
  lines += [f"| {k} | {' | '.join(cell(flat, c, k) for c in columns)} |" for k in rows]
  return "\n".join(lines)
