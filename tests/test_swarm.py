"""The proxy swarm: K vmapped proxies equal K separate runs, common random numbers, exact data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing import swarm as swarm_lib
from mixjax.models import transformer
from mixjax.training import optim
from mixjax.training import trainer

D, N, T, V = 3, 16, 16, 128
MODEL = transformer.TransformerConfig(vocab_size=V, d_model=16, num_layers=1, num_heads=2,
                                      num_kv_heads=1, head_dim=8, mlp_dim=32)


def _pools(num_eval=6):
  """Domain d's tokens all lie in [40 d + 3, 40 d + 40): a row's domain is readable from it."""
  rng = np.random.default_rng(0)
  tokens = np.stack([rng.integers(40 * d + 3, 40 * d + 40, (N, T)) for d in range(D)])
  tokens = tokens.astype(np.int32)
  train = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
           "decoder_segment_ids": np.ones_like(tokens),
           "decoder_positions": np.broadcast_to(np.arange(T), tokens.shape).astype(np.int32),
           "decoder_loss_weights": np.ones_like(tokens)}
  eval_rows = {f: np.concatenate([v[d, :num_eval // D] for d in range(D)]) for f, v in
               train.items()}
  return swarm_lib.Pools(("a", "b", "c"), train, ("a", "b", "c"), eval_rows,
                         np.repeat(np.arange(D), num_eval // D).astype(np.int32))


@pytest.fixture(scope="module")
def swarm():
  config = swarm_lib.SwarmConfig(train_steps=6, batch_size=4, steps_per_call=3, eval_chunk_rows=4)
  return swarm_lib.Swarm(MODEL, optim.OptimizerConfig(warmup_steps=1), _pools(), config)


def test_slot_domains_follow_the_weights_almost_exactly():
  weights_KD = jnp.asarray([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0]])
  u = swarm_lib.slot_points(0, jnp.int32(0), 1000)
  counts_KD = np.stack([np.bincount(np.asarray(swarm_lib.slot_domains(weights_KD, u))[k],
                                    minlength=D) for k in range(2)])
  assert np.abs(counts_KD[0] - [500, 300, 200]).max() <= 3  # low discrepancy, not sampling noise
  assert counts_KD[1].tolist() == [0, 1000, 0]
  # The points are a pure function of (seed, slot): a later start continues the same sequence.
  assert np.array_equal(np.asarray(u[10:20]),
                        np.asarray(swarm_lib.slot_points(0, jnp.int32(10), 10)))
  assert not np.array_equal(np.asarray(u), np.asarray(swarm_lib.slot_points(1, jnp.int32(0),
                                                                              1000)))


def test_every_proxy_reads_each_domain_in_the_same_order():
  pools = _pools()
  train = {f: jnp.asarray(v) for f, v in pools.train.items()}
  weights_KD = jnp.asarray([[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])
  rows_KD = jnp.zeros((2, D), jnp.int32)
  seen = {0: {d: [] for d in range(D)}, 1: {d: [] for d in range(D)}}
  for step in range(8):
    batch, rows_KD, domain_KB = swarm_lib.gather_batch(train, weights_KD, rows_KD, step, 0, 4)
    for k in range(2):
      for b in range(4):
        d = int(domain_KB[k, b])
        row = np.asarray(batch["decoder_target_tokens"][k, b])
        assert row.min() >= 40 * d + 3 and row.max() < 40 * d + 40  # from domain d's pool
        seen[k][d].append(int(np.flatnonzero((pools.train["decoder_target_tokens"][d] ==
                                              row).all(1))[0]))
  for d in range(D):  # the i-th row taken from d is row i mod N, for both proxies
    for k in range(2):
      assert seen[k][d] == [i % N for i in range(len(seen[k][d]))]
  assert np.asarray(rows_KD).sum(1).tolist() == [32, 32]


@pytest.mark.slow  # compiles a scanned train step (~20 CPU-s)
def test_the_swarm_equals_separate_runs_and_shares_init(swarm):
  weights_KD = np.asarray([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
  state, loss_SK = swarm.train(swarm.init(weights_KD), weights_KD)
  losses_KS = swarm.evaluate(state)
  for k in range(3):  # each proxy alone (K = 1) gives what it gave inside the swarm
    alone, alone_loss = swarm.train(swarm.init(weights_KD[k:k + 1]), weights_KD[k:k + 1])
    np.testing.assert_allclose(alone_loss[:, 0], loss_SK[:, k], rtol=2e-5)
    np.testing.assert_allclose(swarm.evaluate(alone)[0], losses_KS[k], rtol=2e-5)
  np.testing.assert_array_equal(losses_KS[0], losses_KS[2])  # same mixture, same init: equal
  assert not np.allclose(losses_KS[0], losses_KS[1])
  assert loss_SK.shape == (6, 3) and state.step == 6


def test_evaluate_is_the_token_weighted_mean_loss_per_set(swarm):
  weights_KD = np.asarray([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  state = swarm.init(weights_KD, init_seeds=[0, 1, 2])  # K = 3 as above: no new compile
  losses_KS = swarm.evaluate(state)
  rows, set_E = swarm.pools.eval, swarm.pools.eval_set_E
  token_losses = jax.jit(lambda params: trainer.token_losses(swarm.model, params, rows))
  for k in range(3):
    loss_BT, weights_BT = token_losses(jax.tree.map(lambda p, k=k: p[k], state.params))
    for s in range(D):
      mask = set_E == s
      expected = (np.asarray(loss_BT)[mask] * np.asarray(weights_BT)[mask]).sum() / np.asarray(
          weights_BT)[mask].sum()
      np.testing.assert_allclose(losses_KS[k, s], expected, rtol=1e-5)
  assert not np.allclose(losses_KS[0], losses_KS[1])  # distinct init seeds differ


@pytest.mark.slow  # compiles a scanned train step (~20 CPU-s)
def test_training_on_a_domain_lowers_its_loss_most(swarm):
  weights_KD = np.eye(D) * 0.98 + 0.01
  losses_KS = swarm_lib.run_swarm(swarm, weights_KD)
  assert np.argmin(losses_KS, axis=0).tolist() == [0, 1, 2]


def test_bad_weights_are_refused(swarm):
  with pytest.raises(ValueError, match=r"\[K, 3\]"):  # refused before anything compiles
    swarm.init(np.ones((2, 2)))
  with pytest.raises(ValueError, match="not all 0"):
    swarm.init(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="init_seeds"):
    swarm.init(np.ones((2, 3)), init_seeds=[0])
