"""Rebuilding a trained run for inference: its model, data config and parameters, on a mesh."""

import dataclasses
import os
from typing import Any

from jax.sharding import Mesh

from mixjax.data import pipeline
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import run_dir
from mixjax.training import trainer

_DATA_FIELDS = ("mixture_or_task_name", "task_feature_lengths", "batch_size",
                "feature_converter", "objective", "vocab")
ONE_DEVICE = partitioning.MeshConfig(shape=(1, 1, 1), num_devices=1)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A run's configs and the parameters of one checkpoint, sharded on `mesh` by `rules`."""
  model_config: transformer.TransformerConfig
  data_config: pipeline.DataConfig
  params: Any
  mesh: Mesh
  rules: tuple
  step: int


def run_data_config(model_dir: str) -> pipeline.DataConfig:
  """The data config a run saved (its mixture, lengths, batch, converter, objective, vocab)."""
  saved = checkpoints.read_run_configs(model_dir)
  return pipeline.DataConfig(**{k: saved["data"][k] for k in _DATA_FIELDS if k in saved["data"]})


def checkpoint_steps(model_dir: str) -> list[int]:
  """The run's checkpoint steps, oldest first; raises naming the fix when it has none."""
  directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
  available = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
      directory) else []
  if not available:
    raise FileNotFoundError(f"No checkpoint in {directory}; train first or pass a MODEL_DIR "
                            "that has one.")
  return available


def restore_run(model_dir: str, step: int | None = None,
                mesh_config: partitioning.MeshConfig = ONE_DEVICE) -> RestoredRun:
  """Rebuilds a run's model from its `run_configs.json` and restores one checkpoint's parameters
  onto `mesh_config`'s mesh (any mesh: orbax reshards). Reads the newest checkpoint unless `step`
  is given."""
  run_dir.check_local(model_dir, "model_dir")
  saved = checkpoints.read_run_configs(model_dir)
  model_config = transformer.TransformerConfig(**saved["model"])
  data_config = run_data_config(model_dir)
  directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
  available = checkpoint_steps(model_dir)
  if step is not None and step not in available:
    raise FileNotFoundError(f"No checkpoint for step {step} in {directory}; it holds steps "
                            f"{available}.")
  step = available[-1] if step is None else step
  ckpt = checkpoints.Checkpointer(model_dir, checkpoints.CheckpointConfig())
  try:
    mesh = partitioning.make_mesh(mesh_config)
    model = transformer.build_model(model_config)
    tx = optim.make_optimizer(optim.OptimizerConfig(**saved["optimizer"]),
                              saved["run"]["train_steps"])
    abstract, _ = trainer.abstract_state_and_shardings(
        model, tx, mesh, mesh_config.rules, (partitioning.data_parallel_size(mesh), 8))
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return RestoredRun(model_config, data_config, state.params, mesh, tuple(mesh_config.rules), step)


def restore_for_inference(model_dir: str, step: int | None = None):
  """`restore_run` on one device. Returns (model config, data config, params)."""
  run = restore_run(model_dir, step)
  return run.model_config, run.data_config, run.params
