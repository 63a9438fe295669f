"""Continued pre-training: INIT_FROM another run's checkpoint, re-warming, replay (gin/cpt.gin)."""

import dataclasses
import json

import gin
import jax
import numpy as np
import optax
import pytest

from mixjax import gin_utils
from mixjax.inference import restore
from mixjax.mixing import schedules
from mixjax.models import transformer
from mixjax.training import init_from
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from mixjax.training import optim
from mixjax.training import partitioning
from tests import helpers

TASK = "mixjax_synthetic_mix"
REPLAY = {"web": 1.0, "bios": 1.0, "math": 1.0, "code": 1.0}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
  """A tiny base run of 4 steps, the source of every continued run here."""
  directory = tmp_path_factory.mktemp("base")
  configs = helpers.tiny_train_kwargs(directory, TASK, steps=4, checkpoint_period=4)
  loop.train(**{**configs, "eval_config": dataclasses.replace(configs["eval_config"], max_probes=2)})
  return directory


def cpt_configs(model_dir, source, *bindings) -> dict:
  """gin/runs/tiny.gin + gin/cpt.gin with the test model, continuing from `source`."""
  gin.clear_config()
  try:
    gin_utils.parse_and_bind(
        [f"--gin_file={helpers.TINY_GIN}", "--gin_file=gin/cpt.gin"]
        + [f"--gin.{b}" for b in (*helpers.TEST_MODEL, f"MODEL_DIR='{model_dir}'",
                                  f"INIT_FROM='{source}'", "CPT_RATES={'prose': 1.0}",
                                  f"REPLAY_RATES={REPLAY}", "REPLAY_RATIO=0.25",
                                  "TRAIN_STEPS=4", "REWARM_STEPS=2", "BATCH_SIZE=8",
                                  "TASK_FEATURE_LENGTHS={'targets': 32}", "EVAL_PERIOD=0",
                                  "CHECKPOINT_PERIOD=2", "RunConfig.progress_bar=False",
                                  "EvalConfig.max_probes=2", "EvalConfig.batch_size=8",
                                  *bindings)], prog="tests")
    return loop.configs_from_gin()
  finally:
    gin.clear_config()


def _losses(model_dir):
  return [m["loss"] for m in metrics_lib.read_metrics(model_dir) if "loss" in m]


def test_replay_rates_mix_the_new_domain_with_the_replayed_mixture():
  ctx = schedules.MixtureContext(domains=("a", "b", "c"), task_domains={}, total_steps=10,
                                 rows_per_step=8, sizes=dict)
  weights_D = schedules.resolve_rates(schedules.replay_rates({"c": 1}, {"a": 3, "b": 1}, 0.2), ctx)
  np.testing.assert_allclose(weights_D, [0.15, 0.05, 0.8])
  with pytest.raises(schedules.ScheduleError, match="must lie in"):
    schedules.replay_rates({"c": 1}, {"a": 1}, 1.5)


def test_a_continued_run_starts_from_the_source_parameters(base_dir, tmp_path):
  configs = cpt_configs(tmp_path / "cpt", base_dir)
  source = init_from.source_configs(configs["init"])
  model, _ = init_from.adopt_source(source, configs["model"], configs["data"].vocab, "base")
  mesh = partitioning.make_mesh(configs["mesh"])
  tx = optim.make_optimizer(configs["optimizer"], configs["run"].train_steps)
  state, _, step = init_from.initial_state(configs["init"], source, transformer.build_model(model),
                                           tx, mesh, configs["mesh"].rules, (8, 8))
  assert step == 4 and int(state.step) == 0
  base = restore.restore_run(str(base_dir))
  jax.tree.map(np.testing.assert_array_equal, state.params, base.params)
  mu = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda n: isinstance(
      n, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)][0].mu
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(mu))  # fresh moments


def test_continued_pretraining_replays_resumes_and_records_its_source(base_dir, tmp_path):
  # The model is left at its defaults: shape and vocabulary come from INIT_FROM.
  def run(model_dir, stop_at_step=None):
    configs = cpt_configs(model_dir, base_dir, "InitConfig.optimizer='restored'",
                          f"RunConfig.stop_at_step={stop_at_step}")
    configs["model"] = transformer.TransformerConfig()
    return loop.train(**configs)

  # Stopped after its first checkpoint, the continued run resumes as any run does (the adopted
  # model passes the resume's same-run check), even with INIT_FROM gone.
  run(tmp_path / "cpt", stop_at_step=2)
  moved = base_dir.with_name(base_dir.name + "_moved")
  base_dir.rename(moved)  # the resume reads only the run's own directory
  try:
    run(tmp_path / "cpt")
  finally:
    moved.rename(base_dir)
  lines = [m for m in metrics_lib.read_metrics(tmp_path / "cpt") if "loss" in m]
  assert [m["step"] for m in lines] == [1, 2, 3, 4]
  base = _losses(base_dir)
  assert lines[0]["loss"] < (base[0] + base[-1]) / 2  # trained weights, not a fresh init

  assert lines[0]["mixture/prose/weight_scheduled"] == pytest.approx(0.75)
  assert lines[0]["mixture/web/weight_scheduled"] == pytest.approx(0.0625)
  saved = json.loads((tmp_path / "cpt" / "run_configs.json").read_text())
  assert saved["init"]["from_dir"] == str(base_dir) and saved["init"]["optimizer"] == "restored"
  assert saved["model"]["d_model"] == 32  # the source's shape, not TransformerConfig's default


def test_a_model_config_contradicting_the_source_is_refused(base_dir, tmp_path):
  configs = cpt_configs(tmp_path / "cpt", base_dir)
  configs["model"] = dataclasses.replace(configs["model"], d_model=48)
  with pytest.raises(init_from.InitFromError, match=r"TransformerConfig.d_model: 32 in INIT_FROM"):
    loop.train(**configs)
  with pytest.raises(init_from.InitFromError, match="is not a directory"):
    loop.train(**cpt_configs(tmp_path / "cpt2", tmp_path / "missing"))
  with pytest.raises(init_from.InitFromError, match="steps \\[4\\]"):
    loop.train(**cpt_configs(tmp_path / "cpt3", base_dir, "InitConfig.step=3"))
