"""RegMix's parts on known answers: sampler limits, regressors, split discipline and search."""

import json

import numpy as np
import pytest
import scipy.stats

from mixjax.mixing import regmix

DOMAINS = ("a", "b", "c", "d")


def test_sampler_respects_caps_and_repetition_limits():
  prior = np.asarray([0.4, 0.3, 0.2, 0.1])
  config = regmix.SamplerConfig(max_weight={"a": 0.5}, max_epochs=2.0)
  epochs_per_weight = np.asarray([1.0, 1.0, 1.0, 8.0])  # d: 8 epochs at weight 1, so <= 0.25
  mixtures = regmix.sample_mixtures(prior, 2000, config, np.random.default_rng(0),
                                    epochs_per_weight, DOMAINS)
  assert mixtures.shape == (2000, 4)
  np.testing.assert_allclose(mixtures.sum(1), 1.0)
  assert mixtures[:, 0].max() <= 0.5 + 1e-9 and mixtures[:, 3].max() <= 0.25 + 1e-9
  assert mixtures[:, 0].max() > 0.45  # the caps bind; they are not all the sampler does
  free = regmix.sample_mixtures(prior, 4000, regmix.SamplerConfig(), np.random.default_rng(0))
  np.testing.assert_allclose(free.mean(0), prior, atol=0.02)  # uncapped: centred on the prior
  sparse = (free < 0.01).any(1).mean()
  assert 0.1 < sparse < 0.9  # low concentrations give sparse mixtures, high ones dense
  again = regmix.sample_mixtures(prior, 2000, config, np.random.default_rng(0),
                                 epochs_per_weight, DOMAINS)
  np.testing.assert_array_equal(mixtures, again)


def test_impossible_caps_are_refused_naming_the_fix():
  with pytest.raises(ValueError, match="max_weight"):
    regmix.sample_mixtures(np.ones(4), 10, regmix.SamplerConfig(max_weight=0.2),
                           np.random.default_rng(0), None, DOMAINS)


def test_spearman_matches_scipy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=50), rng.normal(size=50)
  b[:5] = b[5]  # ties
  assert regmix.spearman(a, a + 0.1 * b) == pytest.approx(
      scipy.stats.spearmanr(a, a + 0.1 * b).statistic)
  assert regmix.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)


def _law(weights_ND):  # a known log-linear law: domain c helps most, then b
  return 1.5 + np.exp(0.5 + weights_ND @ np.asarray([0.3, -0.6, -1.2, 0.8]))


def test_log_linear_law_recovers_a_known_law():
  rng = np.random.default_rng(1)
  x = rng.dirichlet(np.ones(4), 40)
  law = regmix.LogLinearLaw(num_starts=16, steps=1500).fit(x, _law(x))
  test = rng.dirichlet(np.ones(4), 200)
  np.testing.assert_allclose(law.predict(test), _law(test), rtol=0.02)
  assert regmix.spearman(law.predict(test), _law(test)) > 0.99


def test_fit_and_search_finds_the_known_optimum_and_never_tunes_on_test():
  rng = np.random.default_rng(2)
  weights = rng.dirichlet(np.ones(4), 60)
  loss = _law(weights) + rng.normal(0, 0.005, 60)
  config = regmix.RegMixConfig(target="a", top_k=50, loglinear_steps=1000, loglinear_starts=8)
  search = rng.dirichlet(np.ones(4), 20_000)
  found = regmix.fit_and_search(weights, loss, config, search)
  w = found["weights_D"]
  assert np.argsort(-w)[:2].tolist() == [2, 1]  # c, then b: the law's best domains, in order
  report = found["report"]
  assert report["loglinear/test_spearman"] > 0.9 and report["lightgbm/test_spearman"] > 0.5
  assert report["num_train"] + report["num_validation"] + report["num_test"] == 60
  # Early stopping watches validation only: changing the test proxies' losses changes no fit.
  train, val, test = regmix.split_indices(60, config.split_fractions, config.seed)
  assert not set(test) & (set(train) | set(val))
  shuffled = loss.copy()
  shuffled[test] = rng.permutation(shuffled[test]) + 10.0
  refound = regmix.fit_and_search(weights, shuffled, config, search)
  np.testing.assert_allclose(refound["weights_D"], w)
  assert refound["report"]["lightgbm/validation_spearman"] == report[
      "lightgbm/validation_spearman"]


def test_lightgbm_stops_early_on_validation():
  rng = np.random.default_rng(3)
  x = rng.dirichlet(np.ones(4), 40)
  y = _law(x) + rng.normal(0, 0.1, 40)  # noisy: more rounds only fit the noise
  model = regmix.LightGBMRegressor().fit(x[:30], y[:30], x[30:], y[30:])
  assert 0 < model.booster.best_iteration < 1000


@pytest.mark.slow  # the real binary: builds pools, trains two swarms, fits, searches (minutes)
def test_the_binary_writes_the_output_contract(tmp_path):
  from mixjax.mixing.regmix import __main__ as binary  # noqa: PLC0415  (tests may import binaries)
  out = tmp_path / "regmix"
  result = binary.main([
      "--gin_file=gin/mixing/regmix.gin", f"--output={out}",
      "--gin.register_synthetic.num_docs=400", "--gin.RegMixConfig.num_proxies=10",
      "--gin.RegMixConfig.proxies_per_swarm=13", "--gin.RegMixConfig.seed_replicas=3",
      "--gin.SwarmConfig.train_steps=10", "--gin.SwarmConfig.steps_per_call=5",
      "--gin.SwarmConfig.pool_rows=32", "--gin.SwarmConfig.eval_rows=8",
      "--gin.RegMixConfig.num_search=2000", "--gin.RegMixConfig.top_k=20",
      "--gin.RegMixConfig.loglinear_steps=100", "--gin.MIXING_TARGET='math'"])
  weights = json.loads((out / "weights.json").read_text())
  assert list(weights) == ["bios", "code", "math", "prose", "web"]
  assert sum(weights.values()) == pytest.approx(1.0) and weights == result["weights"]
  report = json.loads((out / "report.json").read_text())
  assert report["target"] == "math" and len(report["proxies"]) == 10
  assert report["seed_noise_std"] > 0 and report["regressor"] in regmix.REGRESSORS
  assert "constant_schedule.rates" in (out / "mixture.gin").read_text()
