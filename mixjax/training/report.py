"""A run's report: one PNG of what its `metrics.jsonl` holds (matplotlib, no display needed).

Four panels: per-domain validation loss (with the training loss), probe accuracy per kind with
each kind's chance level, scheduled vs realised mixture weights, and training throughput. Chance
levels and probe counts come from `MODEL_DIR/summary.json` (written when a run ends, see
`summary.py`); a report drawn mid-run has no chance lines yet.

`python -m mixjax.plots MODEL_DIR` draws it for any run directory; `train()` draws it at the end.
"""

import collections
import json
import os
import re
import sys
from typing import Mapping, Sequence

from matplotlib import figure as mpl_figure
import numpy as np

REPORT_NAME = "report.png"
SUMMARY_NAME = "summary.json"

_WEIGHT_KEY = re.compile(r"^mixture/(.+)/weight_(scheduled|realised)$")
ROWS_KEY = re.compile(r"^mixture/(.+)/rows$")
EVAL_KEY = re.compile(r"^eval/(.+)/loss$")
PROBE_KEY = re.compile(r"^probe/(.+)/accuracy$")


class PlotInputError(ValueError):
  """The run directory or its metrics cannot give the report asked for."""


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


def curves(lines: Sequence[dict], pattern: re.Pattern) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{name: (steps_N, values_N)} of every key matching `pattern` (its groups joined by "/" name
  the curve), in step order; the last line wins for a step logged twice (as after a resume)."""
  points = collections.defaultdict(dict)
  for line in lines:
    for key, value in line.items():
      match = pattern.match(key)
      if match:
        points["/".join(match.groups())][line["step"]] = value
  return {name: (np.asarray(sorted(by_step)), np.asarray([by_step[s] for s in sorted(by_step)]))
          for name, by_step in sorted(points.items())}


def weight_curves(lines: Sequence[dict]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """{domain: {'scheduled'|'realised': (steps_N, weights_N)}} from metrics lines."""
  nested = collections.defaultdict(dict)
  for name, curve in curves(lines, _WEIGHT_KEY).items():
    domain, kind = name.rsplit("/", 1)
    nested[domain][kind] = curve
  return dict(nested)


def realised_shares(lines: Sequence[dict], window: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{domain: (steps_N, share_N)}: each domain's share of the rows trained on over the last
  `window` logged intervals, from the cumulative `mixture/<domain>/rows` (exact, whatever the log
  period; a step's own `weight_realised` is a multiple of 1 / batch and, sampled every
  `log_period` steps, can miss the rounding's cycle)."""
  rows = curves(lines, ROWS_KEY)
  if not rows:
    return {}
  steps_N = next(iter(rows.values()))[0]
  if any(not np.array_equal(s_N, steps_N) for s_N, _ in rows.values()):
    return {}  # domains logged at different steps: no common total
  total_N1 = np.concatenate([[0.0], sum(r_N for _, r_N in rows.values())])
  end_N = np.arange(1, len(steps_N) + 1)
  start_N = np.maximum(end_N - window, 0)
  shares = {}
  for domain, (_, rows_N) in rows.items():
    rows_N1 = np.concatenate([[0.0], rows_N])
    shares[domain] = (steps_N, (rows_N1[end_N] - rows_N1[start_N])
                      / np.maximum(total_N1[end_N] - total_N1[start_N], 1.0))
  return shares


def trailing_mean(x_N: np.ndarray, window: int) -> np.ndarray:
  """Mean of each value and the `window - 1` before it (fewer at the start)."""
  cumsum_N1 = np.concatenate([[0.0], np.cumsum(x_N)])
  end_N = np.arange(1, len(x_N) + 1)
  start_N = np.maximum(end_N - window, 0)
  return (cumsum_N1[end_N] - cumsum_N1[start_N]) / (end_N - start_N)


def check_window(window: int):
  if isinstance(window, bool) or not isinstance(window, int) or window < 1:
    raise PlotInputError(f"window={window!r}: must be an integer >= 1 (logged steps averaged).")


def read_probe_stats(model_dir: str) -> dict[str, dict]:
  """{probe name: {"count", "chance"}} from MODEL_DIR/summary.json; {} before a run has ended."""
  path = os.path.join(model_dir, SUMMARY_NAME)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f).get("probes", {})


def _colours(names: Sequence[str]) -> dict[str, str]:
  palette = [f"C{i}" for i in range(10)]
  return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _loss_panel(ax, lines):
  train = curves(lines, re.compile(r"^(loss)$"))
  if "loss" in train:
    ax.plot(*train["loss"], color="0.75", lw=1, label="train (mixture)")
  evals = curves(lines, EVAL_KEY)
  for domain, colour in _colours(list(evals)).items():
    ax.plot(*evals[domain], marker="o", ms=3, color=colour, label=domain)
  ax.set(title="validation loss per domain", xlabel="step", ylabel="nats / token")
  if evals or train:
    ax.legend(fontsize=7)


def _probe_panel(ax, lines, probe_stats):
  probes = curves(lines, PROBE_KEY)
  colours = _colours(list(probes))
  for name, (steps_N, acc_N) in probes.items():
    ax.plot(steps_N, acc_N, marker="o", ms=3, color=colours[name], label=name)
  chances = {round(probe_stats[n]["chance"], 3) for n in probes if "chance" in probe_stats.get(n, {})}
  for chance in sorted(chances):  # one line per level: kinds share them (0.25, 0.5)
    ax.axhline(chance, color="k", ls=":", lw=1)
  title = "probe accuracy (dotted: chance levels)" if chances else "probe accuracy"
  ax.set(title=title, xlabel="step", ylabel="accuracy", ylim=(0, 1))
  if probes:
    ax.legend(fontsize=6, ncol=2)


def _mixture_panel(ax, lines, window):
  weights = weight_curves(lines)
  shares = realised_shares(lines, window)
  for domain, colour in _colours(list(weights)).items():
    kinds = weights[domain]
    if "scheduled" in kinds:
      ax.plot(*kinds["scheduled"], ls="--", color=colour)
    if domain in shares:
      ax.plot(*shares[domain], color=colour, label=domain)
    elif "realised" in kinds:
      steps_N, w_N = kinds["realised"]
      ax.plot(steps_N, trailing_mean(w_N, window), color=colour, label=domain)
  ax.set(title=f"mixture weights (dashed: scheduled; solid: realised, over {window} logs)",
         xlabel="step", ylabel="share of rows")
  ax.title.set_fontsize(9)
  if weights:
    ax.legend(fontsize=7)


def _throughput_panel(ax, lines):
  speed = curves(lines, re.compile(r"^(tokens_per_sec)$"))
  if "tokens_per_sec" in speed:
    steps_N, tps_N = speed["tokens_per_sec"]
    ax.plot(steps_N, tps_N, color="C0")
    ax.set_ylim(0, 1.1 * float(np.max(tps_N)))
  # As logged: tokens over the time since the last log, so steps after an eval or a checkpoint dip.
  ax.set(title="training throughput (dips: evaluation, checkpoints)", xlabel="step",
         ylabel="tokens / s")


def report_figure(lines: Sequence[dict], probe_stats: Mapping[str, dict] | None = None,
                  window: int = 20, title: str = "") -> mpl_figure.Figure:
  """The report's figure (2 × 2 panels) from metrics lines; panels with nothing logged stay
  empty. `probe_stats` ({name: {"chance", ...}}) draws the chance lines."""
  check_window(window)
  fig = mpl_figure.Figure(figsize=(12, 8), layout="constrained")
  (loss, probe), (mixture, speed) = fig.subplots(2, 2)
  _loss_panel(loss, lines)
  _probe_panel(probe, lines, dict(probe_stats or {}))
  _mixture_panel(mixture, lines, window)
  _throughput_panel(speed, lines)
  if title:
    fig.suptitle(title)
  return fig


def write_report(model_dir: str, out_path: str | None = None, window: int = 20) -> str:
  """Writes the run's report (PNG; another extension, e.g. .svg, picks that format); returns
  its path."""
  check_window(window)
  lines = read_run_metrics(model_dir)
  if not lines:
    raise PlotInputError(f"{model_dir}/metrics.jsonl holds no line yet: nothing to plot.")
  out_path = out_path or os.path.join(model_dir, REPORT_NAME)
  fig = report_figure(lines, read_probe_stats(model_dir), window,
                      title=os.path.basename(os.path.normpath(model_dir)))
  fig.savefig(out_path, dpi=100)
  return out_path
