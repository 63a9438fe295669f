"""Scheduled vs realised mixture weights over training, as a dependency-free SVG.

  python -m mixjax.plots MODEL_DIR [--out MODEL_DIR/mixture.svg] [--window 20]

Reads `mixture/<domain>/weight_{scheduled,realised}` from `MODEL_DIR/metrics.jsonl` (written by
scheduled mixtures, see mixjax/data/scheduled_pipeline.py). Per domain, one colour: the schedule
dashed, the realised share of rows solid (a trailing mean over `window` logged steps, since a
single batch holds whole rows).
"""

import argparse
import collections
import os
import re
from typing import Sequence
from xml.sax import saxutils

import numpy as np

from mixjax.training import metrics as metrics_lib

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


def mixture_svg(lines: Sequence[dict], window: int = 20, title: str = "") -> str:
  """The SVG text of the plot (empty axes if no mixture metrics were logged)."""
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


def plot_mixture(model_dir: str, out_path: str | None = None, window: int = 20) -> str:
  """Writes the plot of a run's mixture weights; returns its path."""
  out_path = out_path or os.path.join(model_dir, "mixture.svg")
  svg = mixture_svg(metrics_lib.read_metrics(model_dir), window, title=os.path.basename(
      os.path.normpath(model_dir)))
  with open(out_path, "w") as f:
    f.write(svg)
  return out_path


def main(argv=None):
  parser = argparse.ArgumentParser(prog="mixjax.plots", description=__doc__.splitlines()[0])
  parser.add_argument("model_dir")
  parser.add_argument("--out", default=None, help="SVG path (default: MODEL_DIR/mixture.svg)")
  parser.add_argument("--window", type=int, default=20, help="logged steps averaged (realised)")
  args = parser.parse_args(argv)
  print(plot_mixture(args.model_dir, args.out, args.window))


if __name__ == "__main__":
  main()
