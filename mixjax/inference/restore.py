"""Rebuilding a trained run for inference: its model, data config and parameters."""

import os

from mixjax.data import pipeline
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import trainer

_DATA_FIELDS = ("mixture_or_task_name", "task_feature_lengths", "batch_size",
                "feature_converter", "objective", "vocab")


def restore_for_inference(model_dir: str, step: int | None = None):
  """Rebuilds a run's model from its `run_configs.json` and restores its parameters.

  Returns (model config, data config, params). Reads the newest checkpoint unless `step` is given.
  """
  saved = checkpoints.read_run_configs(model_dir)
  model_config = transformer.TransformerConfig(**saved["model"])
  data_config = pipeline.DataConfig(**{k: saved["data"][k] for k in _DATA_FIELDS
                                       if k in saved["data"]})
  ckpt = checkpoints.Checkpointer(model_dir, checkpoints.CheckpointConfig())
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {os.path.join(model_dir, 'checkpoints')}; train "
                              "first or pass a MODEL_DIR that has one.")
    mesh = partitioning.make_mesh(partitioning.MeshConfig(shape=(1, 1, 1), num_devices=1))
    model = transformer.build_model(model_config)
    tx = optim.make_optimizer(optim.OptimizerConfig(**saved["optimizer"]),
                              saved["run"]["train_steps"])
    abstract, _ = trainer.abstract_state_and_shardings(
        model, tx, mesh, partitioning.DEFAULT_RULES, (1, 8))
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return model_config, data_config, state.params
