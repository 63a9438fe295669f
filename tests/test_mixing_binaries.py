"""The DoReMi and alignment binaries end to end on a tiny config: the output contract, the
report, and that DIR/mixture.gin trains after the run's gin file."""

import json

import pytest

from mixjax.mixing import doremi
from tests import helpers

# Tiny everything: a 400-document corpus, 4 proxy steps on 16-row pools, 4 eval rows per set.
TINY = ["--gin.register_synthetic.num_docs=400", "--gin.SwarmConfig.train_steps=4",
        "--gin.SwarmConfig.steps_per_call=4", "--gin.SwarmConfig.pool_rows=16",
        "--gin.SwarmConfig.eval_rows=4", "--gin.SwarmConfig.eval_chunk_rows=8",
        "--gin.SwarmConfig.batch_size=4", "--gin.proxy/TransformerConfig.num_layers=1"]
DOMAINS = ["bios", "code", "math", "prose", "web"]


def _check_contract(out, result, method):
  weights = json.loads((out / "weights.json").read_text())
  assert list(weights) == DOMAINS and weights == result["weights"]
  assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) > 0
  report = json.loads((out / "report.json").read_text())
  assert report["method"] == method and report["proxy_tokens"] > 0
  check = report["check"]
  assert set(check) == {"prior", method} and all(
      c["target_loss"] > 0 for c in check.values())
  assert "constant_schedule.rates" in (out / "mixture.gin").read_text()
  trained = helpers.train_with_gin_file(out / "mixture.gin", out / "run", 2,
                                        "register_synthetic.num_docs=400")
  assert trained["data"].schedule.resolve(_ctx(trained["data"])).weights_D(0) == pytest.approx(
      [weights[d] for d in DOMAINS])
  return report


def _ctx(data):
  from mixjax.mixing import schedules  # noqa: PLC0415
  return schedules.context_for(data.mixture_or_task_name, 2, data.batch_size)


@pytest.mark.slow  # builds pools of 5 domains + a target, trains 2 + 2 proxies and a run: ~60 CPU-s
def test_the_doremi_binary_writes_the_contract_and_its_mixture_trains(tmp_path):
  from mixjax.mixing.doremi import __main__ as binary  # noqa: PLC0415  (tests may import binaries)
  out = tmp_path / "doremi"
  result = binary.main(["--gin_file=gin/mixing/doremi.gin", f"--output={out}", *TINY,
                        "--gin.MIXING_TARGET='math'", "--gin.DoReMiConfig.step_size=2.0"])
  report = _check_contract(out, result, "doremi")
  assert report["estimator"] == doremi.DoReMiConfig().estimator == "clip_token"
  assert report["target"] == "math" and report["proxy_steps"] == 8  # reference + DRO proxy


@pytest.mark.slow  # as above
def test_the_alignment_binary_writes_the_contract_and_its_mixture_trains(tmp_path):
  from mixjax.mixing.alignment import __main__ as binary  # noqa: PLC0415
  out = tmp_path / "alignment"
  result = binary.main(["--gin_file=gin/mixing/alignment.gin", f"--output={out}", *TINY,
                        "--gin.run_alignment.period=2", "--gin.MIXING_TARGET='math'"])
  report = _check_contract(out, result, "alignment")
  assert report["updates"] == 2 and report["target"] == "math"
  # Aligning toward math's own validation rows: math's weight rises above its prior.
  assert report["final_weights"]["math"] > report["prior"]["math"]
