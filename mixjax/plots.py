"""Scheduled vs realised mixture weights over training, as a dependency-free SVG.

  python -m mixjax.plots MODEL_DIR [--out MODEL_DIR/mixture.svg] [--window 20]

Reads `mixture/<domain>/weight_{scheduled,realised}` from `MODEL_DIR/metrics.jsonl` (written by
every run's batch iterator, see mixjax/data/pipeline.py). Per domain, one colour: the schedule
dashed, the realised share of rows solid (a trailing mean over `window` logged steps, since a
single batch holds whole rows).
"""

import argparse
import collections
import json
import os
import re
import sys
from typing import Sequence
from xml.sax import saxutils

import numpy as np


_KEY = re.compile(r"^mixture/(?P<domain>.+)/weight_(?P<kind>scheduled|realised)$")
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 720, 360, 60, 130, 30, 45


def weight_curves(lines: Sequence[dict]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """{domain: {'scheduled'|'realised': (steps_N, weights_N)}} from metrics lines (last line wins
  for a step logged twice, as after a resume)."""
  points = collections.defaultdict(dict)
  for line in lines:
    for key, value in line.items():
      match = _KEY.match(key)
      if match:
        points[(match["domain"], match["kind"])][line["step"]] = value
  curves = collections.defaultdict(dict)
  for (domain, kind), by_step in points.items():
    steps = np.asarray(sorted(by_step))
    curves[domain][kind] = (steps, np.asarray([by_step[s] for s in steps]))
  return dict(curves)


def _trailing_mean(x_N: np.ndarray, window: int) -> np.ndarray:
  cumsum_N1 = np.concatenate([[0.0], np.cumsum(x_N)])
  end_N = np.arange(1, len(x_N) + 1)
  start_N = np.maximum(end_N - window, 0)
  return (cumsum_N1[end_N] - cumsum_N1[start_N]) / (end_N - start_N)


def _check_window(window: int):
  if isinstance(window, bool) or not isinstance(window, int) or window < 1:
    raise PlotInputError(f"window={window!r}: must be an integer >= 1 (logged steps averaged).")


def mixture_svg(lines: Sequence[dict], window: int = 20, title: str = "") -> str:
  """The SVG text of the plot (empty axes if no mixture metrics were logged)."""
  _check_window(window)
  curves = weight_curves(lines)
  steps = np.concatenate([c[0] for d in curves.values() for c in d.values()] or [np.zeros(1)])
  x_max = max(float(steps.max()), 1.0)
  y_max = max([1e-9] + [float(c[1].max()) for d in curves.values() for c in d.values()])
  y_max = min(1.0, np.ceil(y_max * 1.1 * 10) / 10)
  sx = lambda s: _LEFT + (_W - _LEFT - _RIGHT) * s / x_max  # noqa: E731
  sy = lambda w: _H - _BOTTOM - (_H - _TOP - _BOTTOM) * w / y_max  # noqa: E731
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{_W}" height="{_H}" fill="white"/>',
         f'<text x="{_LEFT}" y="18" font-size="13">{saxutils.escape(title)}</text>']
  for w in np.linspace(0, y_max, 5):
    out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{sy(w):.1f}" y2="{sy(w):.1f}" '
               f'stroke="#ddd"/><text x="{_LEFT - 6}" y="{sy(w) + 4:.1f}" '
               f'text-anchor="end">{w:.2f}</text>')
  for s in np.linspace(0, x_max, 5):
    out.append(f'<text x="{sx(s):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">{s:.0f}</text>')
  out.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 8}" text-anchor="middle">step</text>'
             f'<text x="14" y="{_H / 2}" transform="rotate(-90 14 {_H / 2})" '
             f'text-anchor="middle">share of rows</text>')
  for i, (domain, kinds) in enumerate(sorted(curves.items())):
    colour = _COLOURS[i % len(_COLOURS)]
    for kind, dash in (("scheduled", ' stroke-dasharray="6 3"'), ("realised", "")):
      if kind not in kinds:
        continue
      steps_N, w_N = kinds[kind]
      if kind == "realised":
        w_N = _trailing_mean(w_N, window)
      path = " ".join(f"{sx(s):.1f},{sy(w):.1f}" for s, w in zip(steps_N, w_N))
      out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"'
                 f'{dash}/>')
    y = _TOP + 16 * i
    out.append(f'<line x1="{_W - _RIGHT + 10}" x2="{_W - _RIGHT + 30}" y1="{y}" y2="{y}" '
               f'stroke="{colour}" stroke-width="2"/><text x="{_W - _RIGHT + 36}" y="{y + 4}">'
               f'{saxutils.escape(domain)}</text>')
  y = _TOP + 16 * len(curves) + 8
  out.append(f'<text x="{_W - _RIGHT + 10}" y="{y + 4}" fill="#555">dashed: scheduled</text>'
             f'<text x="{_W - _RIGHT + 10}" y="{y + 20}" fill="#555">solid: realised</text>'
             "</svg>")
  return "\n".join(out)


class PlotInputError(ValueError):
  """The run directory or its metrics cannot give a mixture plot."""


def read_run_metrics(model_dir: str) -> list[dict]:
  """The lines of MODEL_DIR/metrics.jsonl; a torn last line (a run killed mid-write) is skipped
  with a warning, any other bad line raises naming it."""
  path = os.path.join(model_dir, "metrics.jsonl")
  if not os.path.isdir(model_dir):
    raise PlotInputError(f"{model_dir!r} is not a directory: give the MODEL_DIR of a training run.")
  if not os.path.exists(path):
    raise PlotInputError(f"{path} not found: is {model_dir!r} the MODEL_DIR of a training run "
                         "that has logged a step?")
  with open(path) as f:
    raw = [line for line in f if line.strip()]
  lines = []
  for i, line in enumerate(raw, start=1):
    try:
      record = json.loads(line)
      lines.append(record if isinstance(record, dict) and "step" in record else None)
    except json.JSONDecodeError:
      lines.append(None)
    if lines[-1] is None:
      if i == len(raw):
        print(f"warning: {path}:{i} is torn (a run killed while writing it?); skipped.",
              file=sys.stderr)
        lines.pop()
      else:
        raise PlotInputError(f"{path}:{i} is not a JSON object with a 'step': {line[:80]!r}.")
  return lines


def plot_mixture(model_dir: str, out_path: str | None = None, window: int = 20) -> str:
  """Writes the plot of a run's mixture weights; returns its path."""
  _check_window(window)
  lines = read_run_metrics(model_dir)
  if not weight_curves(lines):
    raise PlotInputError(
        f"{model_dir}/metrics.jsonl has no mixture/<domain>/weight_* metrics to plot (the run "
        "logged no training step with mixture accounting yet, or it predates it).")
  out_path = out_path or os.path.join(model_dir, "mixture.svg")
  svg = mixture_svg(lines, window, title=os.path.basename(os.path.normpath(model_dir)))
  with open(out_path, "w") as f:
    f.write(svg)
  return out_path


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
  parser.add_argument("--out", default=None, help="SVG path (default: MODEL_DIR/mixture.svg)")
  parser.add_argument("--window", type=_positive_int, default=20,
                      help="logged steps averaged (realised), >= 1")
  args = parser.parse_args(argv)
  try:
    print(plot_mixture(args.model_dir, args.out, args.window))
  except (PlotInputError, OSError) as e:
    parser.exit(2, f"mixjax.plots: error: {e}\n")


if __name__ == "__main__":
  main()
