"""Orbax checkpoints of the train state together with the data iterator's state.

Saving both in one step directory is what makes resume exact: the model and the batch stream
restart from the same step.
"""

import contextlib
import dataclasses
import errno
import json
import logging as logging_lib
import os
import sys

from absl import logging
import gin
import jax
import orbax.checkpoint as ocp

from mixjax.training import peers


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  period: int = 100          # save every N steps (and always at the end)
  keep: int = 3              # keep the newest N checkpoints
  restore: bool = True       # resume from the newest checkpoint in MODEL_DIR/checkpoints
  # With restore=False: delete the run already in MODEL_DIR (its checkpoints, metrics, tb) first.
  # Without it, restore=False refuses a directory that holds checkpoints.
  overwrite: bool = False


class CorruptCheckpointError(RuntimeError):
  """A checkpoint directory exists but cannot be read."""


class CheckpointShapeError(ValueError):
  """A checkpoint holds arrays of other shapes than the run's state: another model config."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, permissions, ...)."""


def _path_names(path) -> tuple[str, ...]:
  """A tree path as plain names: attribute, dict key and index alike (orbax stores all three as
  dict keys), so the run's state and a checkpoint's metadata can be compared."""
  return tuple(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def _shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
  return {_path_names(p): tuple(getattr(leaf, "shape", ()))
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_differences(saved_tree, abstract_tree, limit: int = 5) -> list[str]:
  """`path: shape in checkpoint vs shape now` for arrays both trees hold, first `limit`."""
  saved, now = _shapes(saved_tree), _shapes(abstract_tree)
  diffs = [f"{'/'.join(p)}: {saved[p]} in the checkpoint, {now[p]} now"
           for p in sorted(set(saved) & set(now), key=lambda p: (p[0] != "params", p))
           if saved[p] != now[p]]  # parameters first: they name the model's shape
  return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


class _DropWriterThreadErrors(logging_lib.Filter):
  """orbax's writer threads log each failed write with its traceback; the save's own error
  (`CheckpointWriteError`) says it once."""

  def filter(self, record):
    return "_SignalingThread.run() raised an exception" not in record.getMessage()


@contextlib.contextmanager
def _quiet_failing_writes():
  """While saving: no writer-thread tracebacks, and none of the 'Event loop is closed' callbacks
  that a failed tensorstore write leaves behind (hundreds of lines on a full disk)."""
  absl_logger = logging_lib.getLogger("absl")
  drop = _DropWriterThreadErrors()
  previous_hook = sys.unraisablehook

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and "Event loop is closed" in str(unraisable.exc_value)):
      previous_hook(unraisable)

  absl_logger.addFilter(drop)
  sys.unraisablehook = hook
  try:
    yield
  finally:
    absl_logger.removeFilter(drop)
    sys.unraisablehook = previous_hook


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with mixjax's two items: state and data."""

  def __init__(self, model_dir: str, config: CheckpointConfig):
    self.directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
    self.config = config
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=config.keep, create=True,
                                             enable_async_checkpointing=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int, final: bool) -> bool:
    return final or (self.config.period > 0 and step % self.config.period == 0)

  def save(self, step: int, state, data_state: dict):
    """Saves step `step`; a failed write raises `CheckpointWriteError` with one message."""
    try:
      with _quiet_failing_writes():
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # orbax wraps I/O errors in several types
      if peers.is_peer_lost(e):  # not the disk: another host is gone (the loop says so)
        raise
      raise CheckpointWriteError(self._write_error_message(e, step)) from e
    logging.info("Saved checkpoint at step %d to %s", step, self.directory)

  def restore(self, step: int, abstract_state):
    """Restores (state, data_state) at `step`, placing arrays in `abstract_state`'s shardings."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable data
      path = os.path.join(self.directory, str(step))
      diffs = self._shape_differences(step, abstract_state)
      if diffs:
        raise CheckpointShapeError(
            f"Checkpoint {path} holds a state of other shapes than this run's model "
            f"({'; '.join(diffs)}): the run in {os.path.dirname(self.directory)} was trained with "
            "another model config. Use a new MODEL_DIR, or set the model config back. The "
            "checkpoint itself is intact.") from e
      raise CorruptCheckpointError(
          f"Checkpoint {path} could not be read ({type(e).__name__}: {e}). Its arrays have the "
          "shapes this run expects, so the files are damaged: Delete that step directory (or "
          "move it aside) to resume from the previous checkpoint (steps: "
          f"{self._manager.all_steps()}), or use a new MODEL_DIR.") from e
    return restored.state, dict(restored.data)

  def _shape_differences(self, step: int, abstract_state) -> list[str]:
    try:
      saved = self._manager.item_metadata(step)["state"]
    except Exception:  # pylint: disable=broad-except  (unreadable metadata: corrupt, not shapes)
      return []
    return shape_differences(saved, abstract_state) if saved is not None else []

  def _write_error_message(self, e: Exception, step: int) -> str:
    """One line for a failed save, naming disk-full and permission errors as such."""
    chain, cause = [], e
    while cause is not None and len(chain) < 10:
      chain.append(cause)
      cause = cause.__cause__ or cause.__context__
    text = " ".join(str(c) for c in chain)
    codes = {getattr(c, "errno", None) for c in chain}
    if errno.ENOSPC in codes or "RESOURCE_EXHAUSTED" in text or "No space left" in text:
      why = "the disk is full (no space left on device)"
      fix = "free some space or set MODEL_DIR on a larger disk"
    elif errno.EACCES in codes or errno.EROFS in codes or "Permission denied" in text:
      why = "permission denied"
      fix = "make MODEL_DIR writable or use another MODEL_DIR"
    else:
      why, fix = f"{type(e).__name__}: {str(e)[:300]}", "check the disk MODEL_DIR is on"
    newest = [s for s in self._manager.all_steps() if s != step]
    kept = (f"the newest complete checkpoint is step {max(newest)}; rerun to resume from it"
            if newest else "no earlier checkpoint exists")
    return (f"Saving checkpoint step {step} to {self.directory} failed: {why}. "
            f"{fix[0].upper()}{fix[1:]}; {kept}.")

  def close(self):
    self._manager.close()


RUN_CONFIGS_FILE = "run_configs.json"


def write_run_configs(model_dir: str, **configs):
  """Saves the run's config dataclasses as JSON, for tools that rebuild the model without gin."""
  payload = {name: dataclasses.asdict(c) for name, c in configs.items()}
  with open(os.path.join(model_dir, RUN_CONFIGS_FILE), "w") as f:
    json.dump(payload, f, indent=1, default=repr)  # objects (e.g. schedules) for reading only


def read_run_configs(model_dir: str) -> dict:
  """The JSON `write_run_configs` wrote, with an error naming what is missing."""
  path = os.path.join(model_dir, RUN_CONFIGS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {model_dir!r} the MODEL_DIR of a mixjax "
                            "training run?")
  with open(path) as f:
    return json.load(f)
