"""Orbax checkpoints of the train state together with the data iterator's state.

Saving both in one step directory is what makes resume exact: the model and the batch stream
restart from the same step.
"""

import dataclasses
import json
import os

from absl import logging
import gin
import orbax.checkpoint as ocp


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  period: int = 100          # save every N steps (and always at the end)
  keep: int = 3              # keep the newest N checkpoints
  restore: bool = True       # resume from the newest checkpoint in MODEL_DIR/checkpoints


class CorruptCheckpointError(RuntimeError):
  """A checkpoint directory exists but cannot be read."""


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with mixjax's two items: state and data."""

  def __init__(self, model_dir: str, config: CheckpointConfig):
    self.directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
    self.config = config
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=config.keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int, final: bool) -> bool:
    return final or (self.config.period > 0 and step % self.config.period == 0)

  def save(self, step: int, state, data_state: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)
    self._manager.wait_until_finished()
    logging.info("Saved checkpoint at step %d to %s", step, self.directory)

  def restore(self, step: int, abstract_state):
    """Restores (state, data_state) at `step`, placing arrays in `abstract_state`'s shardings."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable data
      path = os.path.join(self.directory, str(step))
      raise CorruptCheckpointError(
          f"Checkpoint {path} could not be restored ({type(e).__name__}: {e}). Delete that step "
          f"directory to resume from the previous checkpoint, or set "
          f"CheckpointConfig.restore=False to start afresh.") from e
    return restored.state, dict(restored.data)

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
