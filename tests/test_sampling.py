"""The sampling kernel (interpret mode on CPU): exact kept sets, and draws with the right law."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from scipy import stats

from mixjax.kernels import sampling as sp
# The autouse fixture applies here too once imported (interpret mode is compile-bound).
from tests.test_flash_attention import _unoptimized_compiles  # noqa: F401

# 128-logit chunks: a 1000-token vocabulary spans 8 chunks (the last one padded).
SMALL = sp.SamplingBlockSizes(block_v=128)


@functools.partial(jax.jit, static_argnames=("platform",))
def _mask(logits, temperature, top_k, top_p, min_p, platform=None):
  return sp.sampling_mask(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          interpret=True, block_sizes=SMALL, platform=platform)


@jax.jit
def _sample(key, logits, temperature, top_k, top_p, min_p):
  return sp.sample(key, logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                   interpret=True, block_sizes=SMALL)


def _logits(seed, batch, vocab, dtype=jnp.float32):
  """Gaussian logits with planted ties and masked (-inf) tokens."""
  logits = 3 * jax.random.normal(jax.random.key(seed), (batch, vocab), jnp.float32)
  logits = logits.at[:, 10:30].set(4.0).at[:, 40:45].set(-jnp.inf)
  return logits.astype(dtype)


# Rows: (temperature, top_k, top_p, min_p), each filter alone and combined, ties at every cut.
ROWS = np.array([
    (1.0, 0, 1.0, 0.0),    # no filter
    (1.0, 5, 1.0, 0.0),    # top-k inside a 20-way tie
    (0.7, 1, 1.0, 0.0),
    (1.0, 25, 1.0, 0.0),   # top-k past the tie
    (1.0, 0, 0.9, 0.0),
    (2.0, 0, 0.5, 0.0),
    (1.0, 0, 1.0, 0.1),
    (0.5, 50, 0.8, 0.02),  # all three
    (1.0, 999, 0.95, 0.0),
    (0.0, 10, 0.5, 0.5),   # greedy: filters do not matter
    (1.3, 3, 1e-9, 0.0),   # a vanishing nucleus keeps the top token(s)
    (1.0, 0, 0.999, 1.0),  # min-p 1 keeps the max (and its ties)
], dtype=object)


def _params(rows):
  return (jnp.asarray(rows[:, 0].astype(np.float32)), jnp.asarray(rows[:, 1].astype(np.int32)),
          jnp.asarray(rows[:, 2].astype(np.float32)), jnp.asarray(rows[:, 3].astype(np.float32)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kept_set_matches_sort_based_reference(dtype):
  logits = _logits(0, len(ROWS), 1000, dtype)
  params = _params(ROWS)
  got = np.asarray(_mask(logits, *params))
  want = np.asarray(sp.reference_sampling_mask(logits, temperature=params[0], top_k=params[1],
                                               top_p=params[2], min_p=params[3]))
  np.testing.assert_array_equal(got.sum(-1), want.sum(-1))
  np.testing.assert_array_equal(got, want)


def test_top_k_set_is_lax_top_k():
  """Integer logits (ties everywhere), vocabulary not a multiple of the chunk."""
  logits = jax.random.randint(jax.random.key(1), (6, 300), -4, 5).astype(jnp.float32)
  logits = logits.at[0, :].set(0.0).at[1, ::2].set(-0.0)  # All tied; -0.0 < +0.0 as in lax.top_k.
  ks = np.array([1, 7, 64, 150, 299, 2])
  got = np.asarray(_mask(logits, jnp.ones(6), jnp.asarray(ks, jnp.int32), jnp.ones(6),
                         jnp.zeros(6)))
  for row, k in enumerate(ks):
    _, want = jax.lax.top_k(logits[row], int(k))
    assert set(np.flatnonzero(got[row])) == set(np.asarray(want).tolist()), row


def test_tpu_launch_in_interpret_mode():
  logits = _logits(2, 4, 300)
  params = _params(ROWS[[1, 4, 6, 7]])
  np.testing.assert_array_equal(
      _mask(logits, *params, platform="tpu"),
      sp.reference_sampling_mask(logits, temperature=params[0], top_k=params[1], top_p=params[2],
                                 min_p=params[3]))


def test_draws_are_kept_greedy_is_argmax_and_keys_matter():
  logits = _logits(3, len(ROWS), 1000)
  params = _params(ROWS)
  keep = np.asarray(sp.reference_sampling_mask(logits, temperature=params[0], top_k=params[1],
                                               top_p=params[2], min_p=params[3]))
  draws = np.stack([np.asarray(_sample(jax.random.key(s), logits, *params)) for s in range(4)])
  assert np.all(keep[np.arange(len(ROWS)), draws])
  greedy = ROWS[:, 0] == 0
  assert np.all(draws[:, greedy] == np.asarray(jnp.argmax(logits, -1))[greedy])
  np.testing.assert_array_equal(draws[0], _sample(jax.random.key(0), logits, *params))
  assert np.any(draws[0] != draws[1])


@pytest.mark.parametrize("filters", [(1.0, 0, 1.0, 0.0), (0.8, 12, 0.9, 0.01)])
def test_draws_follow_the_reference_distribution(filters):
  """Chi-square over 4096 draws (one batch of identical rows) against the exact probabilities."""
  vocab, draws = 40, 4096
  logits_1V = jnp.linspace(2.0, -3.0, vocab)[None, :] + 0.3 * jnp.sin(jnp.arange(vocab))[None, :]
  logits = jnp.broadcast_to(logits_1V, (draws, vocab))
  params = _params(np.array([filters] * draws, dtype=object))
  tokens = np.asarray(_sample(jax.random.key(7), logits, *params))
  keep_V = np.asarray(sp.reference_sampling_mask(
      logits_1V, temperature=filters[0], top_k=filters[1], top_p=filters[2], min_p=filters[3]))[0]
  probs_V = np.asarray(jax.nn.softmax(jnp.where(keep_V, logits_1V[0] / filters[0], -jnp.inf)),
                       np.float64)
  assert keep_V[tokens].all()
  counts = np.bincount(tokens, minlength=vocab)[keep_V]
  expected = probs_V[keep_V] * draws
  # Pool the rare tokens so every cell expects >= 5 draws (the chi-square approximation's rule).
  rare = expected < 5
  counts = np.append(counts[~rare], counts[rare].sum())
  expected = np.append(expected[~rare], expected[rare].sum())
  if expected[-1] == 0:
    counts, expected = counts[:-1], expected[:-1]
  expected *= draws / expected.sum()  # float32 softmax: renormalise so the totals agree exactly.
  assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_bad_parameters_are_rejected():
  logits = jnp.zeros((2, 8))
  for name, value in [("temperature", -1.0), ("top_k", -2), ("top_p", 0.0), ("top_p", 1.5),
                      ("min_p", 2.0)]:
    with pytest.raises(ValueError, match=f"{name}={value} must be"):
      sp.sample(jax.random.key(0), logits, **{name: value})


@pytest.mark.parametrize("platform,target", [("gpu", "cuda"), ("tpu", "tpu")])
def test_lowers_for_accelerators(platform, target):
  logits = jax.ShapeDtypeStruct((16, 32000), jnp.bfloat16)
  step = jax.jit(functools.partial(sp.sample, temperature=0.8, top_k=50, top_p=0.9, min_p=0.05,
                                   interpret=False, platform=platform))
  exported = export.export(step, platforms=[target], disabled_checks=[
      export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(jax.random.key(0), logits)
  assert exported.out_avals[0].shape == (16,)
