"""DoReMi: the three excess-loss estimators on hand-computed numbers; the DRO proxy follows the
excess loss; offline output is the time average."""

import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing import doremi
from mixjax.mixing import swarm as swarm_lib
from mixjax.training import optim
from tests import test_swarm


def test_the_three_estimators_on_known_numbers():
  loss = jnp.asarray([[3.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
  ref = jnp.asarray([[1.0, 2.0], [2.5, 2.5], [1.0, 1.0]])
  weights = jnp.ones((3, 2))
  domain = jnp.asarray([0, 0, 1])
  # domain 0 excess per token: [2, -1, -0.5, -0.5]; domain 1: [4, 4]; domain 2 absent.
  got = {e: np.asarray(doremi.excess_losses(loss, ref, weights, domain, 3, e))
         for e in doremi.ESTIMATORS}
  np.testing.assert_allclose(got["clip_domain_mean"], [0.0, 4.0, 0.0])   # max(0, 0/4)
  np.testing.assert_allclose(got["clip_token"], [0.5, 4.0, 0.0])         # 2/4
  np.testing.assert_allclose(got["positive_tokens_mean"], [2.0, 4.0, 0.0])  # 2/1
  with pytest.raises(ValueError, match="clip_token"):
    doremi.DoReMiConfig(estimator="nope")


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
