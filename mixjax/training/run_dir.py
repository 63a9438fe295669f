"""Run-directory safety: what `train()` checks before it reads or writes anything in MODEL_DIR.

- `prepare`: MODEL_DIR is a directory this process can write (not a file, not read-only).
- `check_fresh_start`: `CheckpointConfig.restore=False` refuses a directory holding checkpoints
  unless `CheckpointConfig.overwrite=True`, which deletes the old run's files first.
- `check_same_run`: a resume with another model shape, vocabulary or objective is a
  `ConfigMismatchError` naming the differing fields (not a corrupt checkpoint), raised before
  `run_configs.json` or `config.gin` is rewritten.
- `drop_metrics_after`: on resume, `metrics.jsonl` loses the lines past the restored step (they
  are logged again), so no step appears twice.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

from mixjax.training import checkpoints

METRICS_FILE = "metrics.jsonl"
# Files and folders of a run that `overwrite` deletes (nothing else in MODEL_DIR is touched).
# (summary.json, report.png: what `summary.finish_run` writes, `report.SUMMARY_NAME`/`REPORT_NAME`.)
RUN_FILES = ("checkpoints", METRICS_FILE, "tb", "config.gin", checkpoints.RUN_CONFIGS_FILE,
             "summary.json", "report.png")
# Model fields that change how it runs, not what its checkpoint holds.
RUNTIME_MODEL_FIELDS = ("attention_impl", "remat", "dtype")
# Data fields a resumed run must share: they decide the token ids and the batch stream.
RUN_DATA_FIELDS = ("vocab", "objective", "feature_converter")


class RunDirError(OSError):
  """MODEL_DIR cannot be used: it is a file, or it cannot be created or written."""


class ConfigMismatchError(ValueError):
  """MODEL_DIR holds a run whose config differs in a way its checkpoints cannot follow."""


class CheckpointsExistError(ValueError):
  """A fresh start (restore=False) was asked for in a directory that holds checkpoints."""


def check_local(path: str, name: str = "MODEL_DIR") -> None:
  """Refuses a URL (gs://…): run directories are read and written through the file system, so
  each host would use a local folder named after the scheme (and lose it with the host)."""
  scheme, sep, _ = path.partition("://")
  if sep:
    raise RunDirError(
        f"{name}={path!r} is a {scheme}:// URL, but mixjax reads and writes run directories "
        f"(configs, metrics, checkpoints) through the file system: every host would write a local "
        f"folder named '{scheme}:'. Mount the storage at the same path on every host (a Filestore "
        f"or NFS share, or the bucket through gcsfuse) and give that path.")


def prepare(model_dir: str) -> None:
  """Creates MODEL_DIR if needed; raises `RunDirError` if it is a URL, a file or not writable."""
  check_local(model_dir)
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise RunDirError(f"MODEL_DIR {model_dir!r} is a file, not a directory: set MODEL_DIR to a "
                      "directory path (it is created if missing).")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise RunDirError(f"MODEL_DIR {model_dir!r} cannot be created ({e.strerror}): set MODEL_DIR "
                      "to a directory path you can write to.") from None
  try:  # a uniquely named probe: every host of a multi-host run checks at the same time
    with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".mixjax_write_probe"):
      pass
  except OSError as e:
    raise RunDirError(f"MODEL_DIR {model_dir!r} is not writable ({e.strerror}): set MODEL_DIR to "
                      "a directory you can write to, or fix its permissions.") from None


def checkpoint_steps(model_dir: str) -> list[int]:
  """Steps of the finished checkpoints in MODEL_DIR/checkpoints (orbax names them by step)."""
  directory = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def check_fresh_start(model_dir: str, overwrite: bool) -> None:
  """For `restore=False`: refuses a directory with checkpoints, or (overwrite) deletes the run."""
  steps = checkpoint_steps(model_dir)
  if not steps:
    return
  if not overwrite:
    raise CheckpointsExistError(
        f"CheckpointConfig.restore=False, but {model_dir} holds checkpoints (steps {steps}). "
        "Use a new MODEL_DIR, drop restore=False to resume from step "
        f"{steps[-1]}, or set --gin.CheckpointConfig.overwrite=True to delete that run and "
        "start afresh.")
  for name in RUN_FILES:
    path = os.path.join(model_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


def plain(value: Any) -> Any:
  """The JSON form `write_run_configs` stores, so that saved and current values compare."""
  return json.loads(json.dumps(value, default=repr))


def _differences(prefix: str, saved: Any, current: Any) -> list[tuple[str, Any, Any]]:
  """Fields whose values differ; a field only one side has (a run from an older or newer mixjax)
  is not a difference."""
  if isinstance(saved, dict) and isinstance(current, dict):
    return [d for key in sorted(set(saved) & set(current))
            for d in _differences(f"{prefix}.{key}", saved[key], current[key])]
  return [] if saved == current else [(prefix, saved, current)]


def config_differences(saved: dict, model, data) -> list[tuple[str, Any, Any]]:
  """`(gin field, saved value, current value)` for every field a resume must keep."""
  model_now = plain({k: v for k, v in dataclasses.asdict(model).items()
                      if k not in RUNTIME_MODEL_FIELDS})
  model_then = {k: v for k, v in saved.get("model", {}).items() if k not in RUNTIME_MODEL_FIELDS}
  data_now = plain({k: getattr(data, k) for k in RUN_DATA_FIELDS})
  if dataclasses.is_dataclass(data.vocab):
    data_now["vocab"] = plain(dataclasses.asdict(data.vocab))
  data_then = saved.get("data", {})
  diffs = _differences("TransformerConfig", model_then, model_now)
  for key in RUN_DATA_FIELDS:
    if key in data_then:
      name = "VocabConfig" if key == "vocab" else f"DataConfig.{key}"
      diffs += _differences(name, data_then[key], data_now[key])
  return diffs


def mismatch_message(model_dir: str, diffs: list[tuple[str, Any, Any]]) -> str:
  listed = "; ".join(f"{name}: {then!r} in the run, {now!r} now" for name, then, now in diffs)
  back = " ".join(f"--gin.{name}={then!r}" for name, then, _ in diffs
                  if name != "TransformerConfig.vocab_size")
  return (f"{model_dir} holds a run with another config ({listed}); its checkpoints cannot be "
          f"resumed with this one. Use a new MODEL_DIR, or set the values back"
          f"{f' ({back})' if back else ''}. The checkpoints themselves are intact.")


def check_same_run(model_dir: str, model, data) -> None:
  """Raises `ConfigMismatchError` if MODEL_DIR's `run_configs.json` differs from this run in
  model shape, vocabulary or objective (nothing to check when the file is absent)."""
  path = os.path.join(model_dir, checkpoints.RUN_CONFIGS_FILE)
  if not os.path.exists(path):
    return
  diffs = config_differences(checkpoints.read_run_configs(model_dir), model, data)
  if diffs:
    raise ConfigMismatchError(mismatch_message(model_dir, diffs))


def drop_metrics_after(model_dir: str, step: int) -> int:
  """Rewrites `metrics.jsonl` without lines past `step` (and a torn last line); returns how many
  lines were dropped. Those steps are trained, and logged, again after the resume."""
  path = os.path.join(model_dir, METRICS_FILE)
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line if line.endswith("\n") else line + "\n")
    except (json.JSONDecodeError, KeyError, TypeError):
      continue  # a line torn by a kill mid-write
  if len(kept) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return len(lines) - len(kept)


def logged_keys(model_dir: str, step: int) -> set[str]:
  """The metric names `metrics.jsonl` already holds for `step`."""
  path = os.path.join(model_dir, METRICS_FILE)
  keys = set()
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        if isinstance(record, dict) and record.get("step") == step:
          keys.update(record)
  return keys
