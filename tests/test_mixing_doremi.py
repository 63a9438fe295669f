"""DoReMi: the three excess-loss estimators on hand-computed numbers; the DRO proxy follows the
excess loss; offline output is the time average."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.data import pipeline
from mixjax.inference import restore
from mixjax.mixing import doremi
from mixjax.mixing import stream
from mixjax.mixing import swarm as swarm_lib
from mixjax.mixing.doremi import online
from mixjax.mixing.doremi import reference
from mixjax.models import transformer
from mixjax.training import loop
from mixjax.training import optim
from mixjax.training import trainer
from tests import helpers
from tests import mixture_tasks
from tests import test_mixtures
from tests import test_swarm


def test_the_three_estimators_on_known_numbers():
  loss = jnp.asarray([[3.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
  ref = jnp.asarray([[1.0, 2.0], [2.5, 2.5], [1.0, 1.0]])
  weights = jnp.ones((3, 2))
  domain = jnp.asarray([0, 0, 1])
  # domain 0 excess per token: [2, -1, -0.5, -0.5]; domain 1: [4, 4]; domain 2 absent.
  got = {e: np.asarray(doremi.excess_losses(loss, ref, weights, domain, 3, e))
         for e in doremi.ESTIMATORS}
  np.testing.assert_allclose(got["clip_token"], [0.5, 4.0, 0.0])         # (2 + 0 + 0 + 0) / 4
  np.testing.assert_allclose(got["clip_domain_mean"], [0.0, 4.0, 0.0])   # max(0, 0 / 4)
  np.testing.assert_allclose(got["positive_tokens_mean"], [2.0, 4.0, 0.0])  # 2 / 1 token
  with pytest.raises(ValueError, match="clip_token"):
    doremi.DoReMiConfig(estimator="nope")
  assert doremi.DoReMiConfig().estimator == "clip_token"  # the paper's Algorithm 1


def test_the_estimators_count_only_the_scored_tokens():
  loss = jnp.asarray([[4.0, 1.0, 9.0], [3.0, 0.0, 2.0]])
  ref = jnp.asarray([[1.0, 2.0, 0.0], [1.0, 3.0, 1.0]])
  weights = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # row 0's last token is padding
  domain = jnp.asarray([1, 1])
  # Scored excess, domain 1: [3, -1, 2, -3, 1] over 5 tokens (the padded +9 never counts).
  got = {e: np.asarray(doremi.excess_losses(loss, ref, weights, domain, 2, e))
         for e in doremi.ESTIMATORS}
  np.testing.assert_allclose(got["clip_token"], [0.0, 6.0 / 5])           # (3 + 2 + 1) / 5
  np.testing.assert_allclose(got["clip_domain_mean"], [0.0, 2.0 / 5])     # max(0, 2 / 5)
  np.testing.assert_allclose(got["positive_tokens_mean"], [0.0, 2.0])     # 6 / 3 tokens
  # One exponentiated-gradient step: softmax(log(1/2, 1/2) + 1.0 * [0, 1.2]), 10% uniform.
  _, alpha = doremi.update_weights(jnp.log(jnp.full(2, 0.5)), got["clip_token"],
                                   doremi.DoReMiConfig(step_size=1.0, smoothing=0.1))
  expected = np.exp([0.0, 1.2]) / np.exp([0.0, 1.2]).sum()
  np.testing.assert_allclose(alpha, 0.9 * expected + 0.05, rtol=1e-6)


@pytest.mark.slow  # compiles a scanned train step (~20 CPU-s)
def test_dro_moves_weight_to_the_domain_with_the_largest_excess_loss():
  config = swarm_lib.SwarmConfig(train_steps=12, batch_size=6, steps_per_call=6)
  swarm = swarm_lib.Swarm(test_swarm.MODEL, optim.OptimizerConfig(warmup_steps=1),
                          test_swarm._pools(), config)
  ref = np.full(swarm.pools.train["decoder_target_tokens"].shape, 10.0, np.float32)
  ref[1] = 0.0  # the reference is far better on domain b: b has the largest excess loss
  alpha_SD = doremi.train_dro(swarm, ref, doremi.DoReMiConfig(step_size=0.5))
  assert alpha_SD.shape == (12, 3)
  np.testing.assert_allclose(alpha_SD.sum(1), 1.0, rtol=1e-5)
  assert alpha_SD[-1, 1] > 0.9 and alpha_SD[0, 1] > 1 / 3
  result = doremi.run_offline(swarm, np.ones(3) / 3)
  np.testing.assert_allclose(result["weights_D"], result["alpha_SD"].mean(0)
                             / result["alpha_SD"].mean(0).sum())
  assert result["proxy_steps"] == 24


@pytest.mark.slow  # trains and restores a run: ~30 CPU-s (275 s wall at load 12)
def test_reference_losses_from_a_run_directory_are_computed_once_and_cached(tmp_path,
                                                                              monkeypatch):
  task = helpers.register_word_task(tmp_path)
  run_dir = str(tmp_path / "reference")
  loop.train(**helpers.tiny_train_kwargs(run_dir, task, steps=2, checkpoint_period=2))
  rows = swarm_lib.validation_rows(restore.run_data_config(run_dir), task, 5)
  cache = tmp_path / "cache"
  restored = []
  real_restore = reference.restore.restore_run
  monkeypatch.setattr(reference.restore, "restore_run",
                      lambda *a, **k: restored.append(real_restore(*a, **k)) or restored[-1])
  first = reference.run_losses(run_dir, rows, cache_dir=str(cache), chunk_rows=4)
  assert first.shape == rows["decoder_target_tokens"].shape and len(os.listdir(cache)) == 1
  scored = rows["decoder_loss_weights"] > 0
  assert np.all(np.isfinite(first)) and first[scored].mean() > 1.0  # 2 steps: far from trained
  (run,) = restored  # scored again uncached, in one chunk: the same numbers
  np.testing.assert_allclose(first, reference._score(run.model_config, run.params, rows, 8),
                             rtol=1e-5, atol=1e-6)

  def no_restore(*args, **kwargs):
    raise AssertionError("the cache was missed: the reference was restored again")
  monkeypatch.setattr(reference.restore, "restore_run", no_restore)
  np.testing.assert_array_equal(reference.run_losses(run_dir, rows, cache_dir=str(cache)), first)
  other = dict(rows, decoder_target_tokens=rows["decoder_target_tokens"][::-1].copy())
  with pytest.raises(AssertionError, match="cache was missed"):  # other rows: another key
    reference.run_losses(run_dir, other, cache_dir=str(cache))
  with pytest.raises(AssertionError, match="cache was missed"):  # another step: another key
    reference.run_losses(run_dir, rows, step=1, cache_dir=str(cache))


def _online_setup():
  pools = test_swarm._pools()
  model = transformer.build_model(test_swarm.MODEL)
  tokens = jnp.zeros((1, test_swarm.T), jnp.int32)
  params = [nn.unbox(model.init(jax.random.key(s), tokens)["params"]) for s in (0, 1)]
  rows = {f: np.concatenate([v[0, :3], v[1, :3]]) for f, v in pools.train.items()}
  domain_B = np.repeat([0, 1], 3).astype(np.int32)
  loss_BT = np.asarray(trainer.token_losses(model, params[0], rows)[0])
  # The reference is 1 nat better than the first params on domain 0 ("math") and 1 worse on
  # domain 1: math has the larger excess loss.
  ref_BT = loss_BT + np.where(domain_B[:, None] == 0, -1.0, 1.0)
  return model, params, rows, domain_B, ref_BT


def test_online_doremi_moves_the_main_run_toward_the_excess_loss_and_resumes_exactly():
  model, params, rows, domain_B, ref_BT = _online_setup()
  data = pipeline.DataConfig(mixture_tasks.TWO, {"targets": 32}, 8)

  def run(steps, state=None, start=0):
    source = online.DoReMiSource(("math", "web"), model, rows, domain_B, ref_BT, period=2,
                                 config=doremi.DoReMiConfig(step_size=0.5))
    it = stream.make_batch_iterator(data, 0, None, 6, state=state, weight_source=source)
    out = []
    for step in range(start, steps):
      out.append(next(it))
      it.update(step + 1, {"params": params[step % 2]})  # the main run's params after the step
    return out, it, source
  straight, _, source = run(6)
  assert source.state()["updates"] == 3  # after steps 2, 4, 6
  w = source.weights_D(6)
  assert w[0] > 0.6 and np.isclose(w.sum(), 1.0)  # toward math, the larger excess loss
  assert 0.5 < source.time_averaged()[0] < w[0]  # the mean over updates lags the last weights
  half, half_it, _ = run(3)
  state = json.loads(json.dumps(half_it.state()))
  rest, _, resumed = run(6, state=state, start=3)
  test_mixtures._assert_same_batches(half + rest, straight)
  np.testing.assert_array_equal(resumed.weights_D(6), source.weights_D(6))
  np.testing.assert_array_equal(resumed.time_averaged(), source.time_averaged())
