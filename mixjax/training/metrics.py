"""Run metrics: one JSON object per line in `metrics.jsonl`, mirrored to TensorBoard."""

import json
import math
import os

from tensorboardX import SummaryWriter


class MetricsWriter:
  """Appends `{"step": N, ...}` lines; scalars also go to TensorBoard under `MODEL_DIR/tb`."""

  def __init__(self, model_dir: str, enable_tensorboard: bool = True):
    os.makedirs(model_dir, exist_ok=True)
    self.path = os.path.join(model_dir, "metrics.jsonl")
    self._file = open(self.path, "a")
    self._tb = SummaryWriter(os.path.join(model_dir, "tb")) if enable_tensorboard else None

  def write(self, step: int, metrics: dict):
    clean = {k: float(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in clean.items():
        if math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))

  def close(self):
    self._file.close()
    if self._tb is not None:
      self._tb.close()


class NullMetricsWriter:
  """What hosts other than process 0 write: nothing (one host owns the run directory's files)."""

  def write(self, step: int, metrics: dict):
    del step, metrics

  def close(self):
    pass


def read_metrics(model_dir: str) -> list[dict]:
  """All lines of a run's `metrics.jsonl`."""
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
