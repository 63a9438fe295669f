"""Gradient alignment: one grad + one jvp equals k backward passes; the source moves and resumes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing import alignment
from mixjax.models import transformer
from tests import test_swarm


def _setup():
  pools = test_swarm._pools(num_eval=6)
  model = transformer.build_model(test_swarm.MODEL)
  params = model.init(jax.random.key(0), jnp.zeros((1, test_swarm.T), jnp.int32))["params"]
  params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                        is_leaf=lambda x: hasattr(x, "value"))
  rows = {f: jnp.asarray(v) for f, v in pools.eval.items()}
  return pools, model, params, rows


def test_one_grad_and_one_jvp_equal_k_backward_passes():
  pools, model, params, rows = _setup()
  domain_B = jnp.asarray(pools.eval_set_E)
  target = {f: v[:2] for f, v in rows.items()}  # domain a's rows are the target
  fast_D = jax.jit(lambda p: alignment.domain_alignments(model, p, rows, domain_B, 3, target))(
      params)

  def mean_loss(p, r):
    loss_B, tokens_B = alignment.example_losses(model, p, r)
    return loss_B.sum() / tokens_B.sum()
  grad = jax.jit(jax.grad(mean_loss))  # every row set here has 2 rows: one compile
  g_target = grad(params, target)
  for d in range(3):  # the usual way: one backward pass per domain
    g_d = grad(params, {f: v[np.asarray(pools.eval_set_E) == d]
                                       for f, v in rows.items()})
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g_d), jax.tree.leaves(g_target)))
    np.testing.assert_allclose(fast_D[d], dot, rtol=2e-4, atol=1e-7)
  assert int(jnp.argmax(fast_D)) == 0  # the target's own domain aligns best


@pytest.mark.slow  # compiles the alignment function again (~20 CPU-s)
def test_the_source_moves_toward_the_aligned_domain_and_resumes_exactly():
  pools, model, params, rows = _setup()
  target = {f: v[:2] for f, v in rows.items()}
  make = lambda: alignment.AlignmentSource(("a", "b", "c"), model, pools.eval,  # noqa: E731
                                           pools.eval_set_E, target, period=2)
  source = make()
  np.testing.assert_allclose(source.weights_D(0), [1 / 3] * 3)
  source.update(1, {"params": params})  # off-period: no change
  np.testing.assert_allclose(source.weights_D(1), [1 / 3] * 3)
  source.update(2, {"params": params})
  w = source.weights_D(2)
  assert w[0] > 1 / 3 and w[0] == w.max() and np.isclose(w.sum(), 1.0)
  resumed = make()
  resumed.restore(source.state())
  source.update(4, {"params": params})
  resumed.update(4, {"params": params})
  np.testing.assert_array_equal(resumed.weights_D(5), source.weights_D(5))
