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


def restore_for_inference(model_dir: str, step: int | None = None):
  """Rebuilds a run's model from its `run_configs.json` and restores its parameters.

  Returns (model config, data config, params). Reads the newest checkpoint unless `step` is given.
  """
  from mixjax.data import pipeline
  from mixjax.models import transformer
  from mixjax.training import optim, partitioning, trainer

  path = os.path.join(model_dir, RUN_CONFIGS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {model_dir!r} the MODEL_DIR of a mixjax "
                            "training run?")
  with open(path) as f:
    saved = json.load(f)
  model_config = transformer.TransformerConfig(**saved["model"])
  data_config = pipeline.DataConfig(**{
      k: saved["data"][k] for k in ("mixture_or_task_name", "task_feature_lengths", "batch_size",
                                    "feature_converter", "objective")})
  ckpt = Checkpointer(model_dir, CheckpointConfig())
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {ckpt.directory}; train first or pass a MODEL_DIR "
                            "that has one.")
  mesh = partitioning.make_mesh(partitioning.MeshConfig(shape=(1, 1, 1), num_devices=1))
  model = transformer.build_model(model_config)
  tx = optim.make_optimizer(optim.OptimizerConfig(**saved["optimizer"]), saved["run"]["train_steps"])
  abstract, _ = trainer.abstract_state_and_shardings(
      model, tx, mesh, partitioning.DEFAULT_RULES, (1, 8))
  state, _ = ckpt.restore(step, abstract)
  ckpt.close()
  return model_config, data_config, state.params
