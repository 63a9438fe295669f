"""The training loop: wires mesh, data, model, optimiser, checkpoints, evaluation and metrics.

`train()` is what `python -m mixjax.train` and the notebooks call. Each concern is configured by
its own small gin-configurable dataclass; this module only orders the work.
"""

import dataclasses
import math
import os
import sys
import time
from typing import Mapping, Sequence

from absl import logging
import gin
import jax
import seqio
from tqdm import tqdm

from mixjax import gin_utils
from mixjax import vocab as vocab_lib
from mixjax.data import objectives
from mixjax.data import pipeline
from mixjax.data import tasks
from mixjax.eval import evaluator as evaluation
from mixjax.mixing import stream
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.training import config_checks
from mixjax.training import init_from as init_lib
from mixjax.training import metrics as metrics_lib
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import peers
from mixjax.training import run_dir
from mixjax.training import summary as summary_lib
from mixjax.training import trainer


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
  model_dir: str = gin.REQUIRED
  train_steps: int = gin.REQUIRED
  seed: int = 0
  log_period: int = 10
  progress_bar: bool = True
  # End this invocation after this step (checkpointing there); train_steps still sets the
  # schedule. For time-boxed or preemptible slots: rerun to continue.
  stop_at_step: int | None = None
  # At the end, print the summary and write summary.json and report.png (mixjax.training.summary).
  summary: bool = True


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def _write_operative_config(model_dir: str):
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())


def _sized_for(model: transformer.TransformerConfig, data: pipeline.DataConfig
               ) -> transformer.TransformerConfig:
  """The model config with its embedding size from the run's vocabulary (padded to 128)."""
  vocabulary = data.vocabulary
  if model.vocab_size is None:
    return dataclasses.replace(model, vocab_size=vocab_lib.embedding_size(vocabulary))
  if model.vocab_size < vocabulary.vocab_size:
    raise ValueError(f"TransformerConfig.vocab_size={model.vocab_size} is smaller than the "
                     f"vocabulary ({vocabulary.vocab_size} ids); leave it unset (None) to size "
                     "the embedding from the vocabulary.")
  return model


def _announce(message: str):
  """A line on the console (and in the log) that a user must see, e.g. that a run resumed."""
  logging.info(message)
  print(message, file=sys.stderr, flush=True)


def _format_eval(metrics: dict) -> str:
  return "  ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()))


def configs_from_gin() -> dict:
  """The run's configs as the current gin bindings make them: `train(**configs_from_gin())` is
  what `python -m mixjax.train` runs (tests and notebooks build runs this way too)."""
  return dict(run=RunConfig(), data=pipeline.DataConfig(), model=transformer.TransformerConfig(),
              optimizer=optim.OptimizerConfig(), mesh=partitioning.MeshConfig(),
              checkpoint=checkpoints.CheckpointConfig(), eval_config=evaluation.EvalConfig(),
              mixing=stream.MixingConfig(), init=init_lib.InitConfig())


@gin.configurable
def train(run: RunConfig | None = None, data: pipeline.DataConfig | None = None,
          model: transformer.TransformerConfig | None = None,
          optimizer: optim.OptimizerConfig | None = None,
          mesh: partitioning.MeshConfig | None = None,
          checkpoint: checkpoints.CheckpointConfig | None = None,
          eval_config: evaluation.EvalConfig | None = None,
          mixing: stream.MixingConfig | None = None,
          extra_probes: Mapping[str, Sequence[dict]] | None = None,
          weight_source=None, init: init_lib.InitConfig | None = None) -> dict:
  """Trains a model on a registered task or mixture; returns the final step's metrics.

  Writes `MODEL_DIR/{config.gin, run_configs.json, metrics.jsonl, tb/, checkpoints/}` and
  resumes from the newest checkpoint there when one exists. `extra_probes` (`{metric name:
  probes}`) are scored at every evaluation beside the tasks' own. `weight_source` (a
  `mixjax.mixing.sources.WeightSource`; None: the run's schedule) gives the domain weights and
  gets `update(step, {"params", "metrics"})` after every step (use the params then: the next
  step donates them). `init.from_dir` (gin `INIT_FROM`) starts a fresh run from another run's
  checkpoint (continued pre-training; `mixjax.training.init_from`).
  """
  run = run or RunConfig()
  data, model = data or pipeline.DataConfig(), model or transformer.TransformerConfig()
  optimizer, mesh = optimizer or optim.OptimizerConfig(), mesh or partitioning.MeshConfig()
  checkpoint = checkpoint or checkpoints.CheckpointConfig()
  eval_config = eval_config or evaluation.EvalConfig()
  mixing = mixing or stream.MixingConfig()
  init = init or init_lib.InitConfig()
  gin_utils.check_required(run, data)
  source = None
  if init.from_dir is not None:  # the model shape and vocabulary are the source run's
    # Once the continued run has its own checkpoint it resumes from it, and its own
    # run_configs.json holds that shape (INIT_FROM may be gone by then).
    resuming = checkpoint.restore and bool(run_dir.checkpoint_steps(run.model_dir))
    source = (checkpoints.read_run_configs(run.model_dir) if resuming
              else init_lib.source_configs(init))
    model, vocab = init_lib.adopt_source(source, model, data.vocab,
                                         run.model_dir if resuming else init.from_dir)
    data = dataclasses.replace(data, vocab=vocab)
  config_checks.check_run_values(run, data, checkpoint, eval_config, optimizer)
  objectives.get(data.objective).check(data.feature_converter, model.architecture)
  tasks.check_sources(data.mixture_or_task_name)
  tasks.check_rows_fit(data.mixture_or_task_name, data.row_length, data.vocab)
  model = _sized_for(model, data)
  writes_run_dir = jax.process_index() == 0  # every host trains and saves; one writes the files
  run_dir.prepare(run.model_dir)
  if not checkpoint.restore:
    run_dir.check_fresh_start(run.model_dir, checkpoint.overwrite and writes_run_dir)

  device_mesh = partitioning.make_mesh(mesh)
  if data.batch_size % partitioning.data_parallel_size(device_mesh):
    raise ValueError(f"batch_size={data.batch_size} must be a multiple of the data-parallel size "
                     f"{partitioning.data_parallel_size(device_mesh)} (mesh {dict(device_mesh.shape)}).")
  decoder = transformer.build_model(model)
  tx = optim.make_optimizer(optimizer, run.train_steps)
  init_shape = (partitioning.data_parallel_size(device_mesh), 8)
  ckpt = checkpoints.Checkpointer(run.model_dir, checkpoint)
  shard_info = seqio.ShardInfo(jax.process_index(), jax.process_count())

  latest = ckpt.latest_step() if checkpoint.restore else None
  if latest is not None:
    run_dir.check_same_run(run.model_dir, model, data)  # before restoring or rewriting anything
    abstract, shardings = trainer.abstract_state_and_shardings(
        decoder, tx, device_mesh, mesh.rules, init_shape)
    state, data_state = ckpt.restore(latest, abstract)
    batches = stream.make_batch_iterator(data, run.seed, shard_info, run.train_steps,
                                         state=data_state, mixing=mixing,
                                         weight_source=weight_source)
    dropped = run_dir.drop_metrics_after(run.model_dir, latest) if writes_run_dir else 0
    _announce(f"Resuming from step {latest} of {run.train_steps} in {run.model_dir} "
              f"(checkpoint {ckpt.directory}/{latest}"
              f"{f'; dropped {dropped} metrics lines past it' if dropped else ''}).")
  else:
    if source is not None:
      state, shardings, source_step = init_lib.initial_state(init, source, decoder, tx,
                                                             device_mesh, mesh.rules, init_shape)
      _announce(f"Starting from {init.from_dir} (checkpoint step {source_step}; optimiser "
                f"{init.optimizer}).")
    else:
      state, shardings = trainer.create_state(decoder, tx, device_mesh, mesh.rules, init_shape,
                                              run.seed)
    batches = stream.make_batch_iterator(data, run.seed, shard_info, run.train_steps,
                                         mixing=mixing, weight_source=weight_source)

  if writes_run_dir:  # only once the run directory is known to be this run's
    checkpoints.write_run_configs(run.model_dir, model=model, data=data, optimizer=optimizer,
                                  run=run, init=init)

  step_fn = trainer.make_train_step(decoder, tx, device_mesh, mesh.rules, shardings)
  evaluator = evaluation.Evaluator(decoder, device_mesh, mesh.rules, data, eval_config,
                                  extra_probes=extra_probes)
  writer = (metrics_lib.MetricsWriter(run.model_dir) if writes_run_dir
            else metrics_lib.NullMetricsWriter())
  start_step = int(state.step)
  progress = tqdm(total=run.train_steps, initial=start_step,
                  disable=not (run.progress_bar and writes_run_dir),
                  desc="train", unit="step", dynamic_ncols=True)
  last = {}
  pending = None  # (step, metrics): read one step late so the device never waits on the host
  last_time = time.perf_counter()

  def log_train(step, step_metrics):
    nonlocal last_time
    values = {k: float(v) for k, v in step_metrics.items()}
    now = time.perf_counter()
    values["tokens_per_sec"] = values.pop("num_tokens") / max(now - last_time, 1e-9)
    last_time = now
    if not math.isfinite(values["loss"]):
      raise NonFiniteLossError(
          f"Training loss is {values['loss']} at step {step}. Lower OptimizerConfig.learning_rate "
          f"or check the data; the newest good checkpoint is step {ckpt.latest_step()} in "
          f"{ckpt.directory}.")
    progress.set_postfix(loss=f"{values['loss']:.3f}")
    if step % run.log_period == 0 or step == run.train_steps:
      writer.write(step, {**values, **batches.step_metrics(step)})
    return values

  def evaluate(step, unless_logged=False):
    eval_metrics = evaluator.evaluate(state.params)
    if not eval_metrics:  # no validation split and no probes (e.g. an ICLM task)
      return {}
    if not (unless_logged and set(eval_metrics) <= run_dir.logged_keys(run.model_dir, step)):
      writer.write(step, eval_metrics)
    if writes_run_dir:
      progress.write(f"step {step}: {_format_eval(eval_metrics)}")
    return eval_metrics

  step = start_step
  try:
    end_step = min(run.train_steps, run.stop_at_step or run.train_steps)
    for step in range(start_step + 1, end_step + 1):
      state, step_metrics = step_fn(state, trainer.global_batch(device_mesh, next(batches)))
      batches.update(step, {"params": state.params, "metrics": step_metrics})
      if pending is not None:
        last.update(log_train(*pending))
      pending = (step, step_metrics)
      progress.update(1)
      if step == start_step + 1 and writes_run_dir:
        _write_operative_config(run.model_dir)
      final = step == end_step
      evaluate_now = final or (eval_config.period and step % eval_config.period == 0)
      save_now = ckpt.should_save(step, final)
      if evaluate_now or save_now:  # log before saving: a run killed after it loses no line
        last.update(log_train(*pending))
        pending = None
      if evaluate_now:
        last.update(evaluate(step))
      if save_now:
        ckpt.save(step, state, batches.state())
    if pending is not None:
      last.update(log_train(*pending))
    if start_step >= end_step:
      last.update(evaluate(start_step, unless_logged=True))  # a finished run: no second line
  except Exception as e:  # pylint: disable=broad-except  (re-raised: named when a host is gone)
    if peers.is_peer_lost(e):
      raise peers.lost_peer(e, step, ckpt.latest_step()) from e
    raise
  finally:
    progress.close()
    writer.close()
    ckpt.close()
  if writes_run_dir:
    _write_operative_config(run.model_dir)
    if run.summary:
      summary_lib.finish_run(run.model_dir, state.params, evaluator.probes)
  return last
