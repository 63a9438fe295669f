"""Trainer tests: sharding parity, real sharding, resume, NaN and bad-input errors."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from mixjax.training import checkpoints
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from mixjax.training import partitioning
from mixjax.training import trainer
from tests import helpers


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return helpers.register_word_task(tmp_path_factory.mktemp("corpus"))


def _losses(model_dir):
  return {m["step"]: m["loss"] for m in metrics_lib.read_metrics(model_dir) if "loss" in m}


def test_sharding_parity_one_vs_eight_devices(task, tmp_path):
  assert jax.device_count() == 8
  one = loop.train(**helpers.tiny_train_kwargs(tmp_path / "one", task, mesh_shape=(1, 1, 1),
                                               num_devices=1))
  loop.train(**helpers.tiny_train_kwargs(tmp_path / "eight", task, mesh_shape=(2, 2, 2)))
  losses_one, losses_eight = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
  assert sorted(losses_one) == list(range(1, 7))
  np.testing.assert_allclose([losses_eight[s] for s in sorted(losses_one)],
                             [losses_one[s] for s in sorted(losses_one)], rtol=2e-5)
  assert one["loss"] < losses_one[1]  # it learns


def test_parameters_are_sharded_on_a_2x2x2_mesh(task, tmp_path):
  kwargs = helpers.tiny_train_kwargs(tmp_path, task)
  from mixjax.models import transformer
  from mixjax.training import optim
  mesh = partitioning.make_mesh(partitioning.MeshConfig(shape=(2, 2, 2)))
  model = transformer.Decoder(dataclasses.replace(kwargs["model"], vocab_size=640))
  tx = optim.make_optimizer(optim.OptimizerConfig(), 10)
  state, _ = trainer.create_state(model, tx, mesh, partitioning.DEFAULT_RULES, (4, 8), seed=0)
  query = state.params["layer_0"]["attention"]["query"]["kernel"]  # [embed, heads, head_dim]
  assert query.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  shard_shapes = {s.data.shape for s in query.addressable_shards}
  assert shard_shapes == {(query.shape[0] // 2, query.shape[1] // 2, query.shape[2])}
  embedding = state.params["embedding"]
  assert embedding.addressable_shards[0].data.size == embedding.size // 4
  # Adam moments follow their parameters' shardings.
  mu_query = state.opt_state[1][0].mu["layer_0"]["attention"]["query"]["kernel"]
  assert mu_query.sharding.spec == query.sharding.spec


def test_resume_continues_the_loss_curve(task, tmp_path):
  straight = tmp_path / "straight"
  loop.train(**helpers.tiny_train_kwargs(straight, task, steps=8, checkpoint_period=4))
  resumed = tmp_path / "resumed"
  loop.train(**helpers.tiny_train_kwargs(resumed, task, steps=8, checkpoint_period=4,
                                         stop_at_step=4))
  assert checkpoints.Checkpointer(str(resumed), checkpoints.CheckpointConfig()).latest_step() == 4
  loop.train(**helpers.tiny_train_kwargs(resumed, task, steps=8, checkpoint_period=4))
  assert checkpoints.Checkpointer(str(resumed), checkpoints.CheckpointConfig()).latest_step() == 8
  losses_straight, losses_resumed = _losses(straight), _losses(resumed)
  assert set(range(5, 9)) <= set(losses_resumed)
  np.testing.assert_allclose([losses_resumed[s] for s in range(5, 9)],
                             [losses_straight[s] for s in range(5, 9)], rtol=1e-5)


def test_nan_loss_is_a_clear_error(task, tmp_path):
  kwargs = helpers.tiny_train_kwargs(tmp_path, task, steps=3)
  from mixjax.training import optim
  kwargs["optimizer"] = optim.OptimizerConfig(learning_rate=float("nan"), warmup_steps=0)
  with pytest.raises(loop.NonFiniteLossError, match="Lower OptimizerConfig.learning_rate"):
    loop.train(**kwargs)


def test_unknown_task_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="Unknown task or mixture 'no_such_task'"):
    loop.train(**helpers.tiny_train_kwargs(tmp_path, "no_such_task"))


def test_corrupt_checkpoint_is_a_clear_error(task, tmp_path):
  loop.train(**helpers.tiny_train_kwargs(tmp_path, task, steps=3, checkpoint_period=3))
  step_dir = tmp_path / "checkpoints" / "3" / "state"
  for root, _, files in os.walk(step_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(checkpoints.CorruptCheckpointError, match="Delete that step directory"):
    loop.train(**helpers.tiny_train_kwargs(tmp_path, task, steps=5, checkpoint_period=3))


def test_bad_mesh_is_a_clear_error():
  with pytest.raises(ValueError, match="needs 16 devices"):
    partitioning.resolve_mesh_shape((2, 2, 4), 8)
  with pytest.raises(ValueError, match=r"but 8 are in use \(2 processes x 4 local devices\); "
                                       "set .* or the number of hosts"):
    partitioning.resolve_mesh_shape((2, 2, 1), 8, "2 processes x 4 local devices")


def test_metrics_jsonl_lines_have_step_loss_and_throughput(task, tmp_path):
  loop.train(**helpers.tiny_train_kwargs(tmp_path, task, steps=2, eval_period=2))
  lines = metrics_lib.read_metrics(tmp_path)
  train_lines = [m for m in lines if "loss" in m]
  assert all("tokens_per_sec" in m and m["tokens_per_sec"] > 0 for m in train_lines)
  assert any(f"eval/{'test_words'}/loss" in m for m in lines)
  assert os.path.exists(tmp_path / "config.gin")
  assert json.loads(open(tmp_path / "metrics.jsonl").readline())["step"] == 1
