"""Smoke test of benchmarks/iclm_experiment.py end to end: tiny corpus, tiny model, two steps."""

import importlib.util
import json
import math
import os

from mixjax.iclm import probes as iclm_probes

_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "benchmarks", "iclm_experiment.py")


def _experiment():
  spec = importlib.util.spec_from_file_location("iclm_experiment", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_experiment_writes_both_arms_and_their_paired_difference(tmp_path):
  out = tmp_path / "results.json"
  _experiment().main([
      "--seeds", "0", "--steps", "2", "--batch_size", "8", "--context_tokens", "512",
      "--docs", "1000", "--probes", "6", "--eval_rows", "8", "--eval_batch", "8",
      "--context_eval", "6", "--linked", "20", "--gin_file", "gin/models/tiny.gin", "--workdir", str(tmp_path / "work"),
      "--json", str(out)])
  flat = json.loads(out.read_text())
  domains = ("web", "bios", "math", "code", "prose", "mean")
  for name in ("iclm", "random", "iclm-random"):
    for domain in domains:
      assert math.isfinite(flat[f"mean/{name}/eval/{domain}/loss"])
    for kind in iclm_probes.KINDS:
      assert f"mean/{name}/probe/{kind}/accuracy" in flat
  for arm in ("iclm", "random"):
    assert all(0 < flat[f"seed0/{arm}/eval/{d}/loss"] < 10 for d in domains)
    assert all(0 <= flat[f"seed0/{arm}/probe/{k}/accuracy"] <= 1 for k in iclm_probes.KINDS)
    assert flat[f"seed0/{arm}/data/contexts"] > 0
    mix = [v for k, v in flat.items() if k.startswith(f"seed0/{arm}/data/first_docs/")]
    assert len(mix) == 6 and math.isclose(sum(mix), 1.0)  # the five domains and linked
  assert flat["seed0/iclm/data/adjacent_similarity"] > flat["seed0/random/data/adjacent_similarity"]
  assert all(flat[f"probes/{kind}"] == 6 for kind in ("same_person", "colleague"))
  assert flat["steps"] == 2 and flat["probe_chance"] == 0.25
  for arm in ("iclm", "random"):
    for order in ("iclm", "random"):
      name = f"seed0/{arm}/ctx/{order}"
      # A context's first document sees nothing before it: in context it costs what it does alone.
      assert abs(flat[f"{name}/pos1/gain"]) < 1e-4 and flat[f"{name}/pos1/docs"] == 6
      assert flat[f"{name}/pos2/docs"] > 0 and math.isfinite(flat[f"{name}/pos2/gain"])
    pair = f"seed0/{arm}/pair/bios"
    assert flat[f"{pair}/pairs"] > 0 and math.isfinite(flat[f"{pair}/related_gain"])
    assert flat[f"seed0/{arm}/pair/linked/pairs"] == 4  # 2 validation pairs, each way round
    assert all(math.isfinite(flat[f"seed0/{arm}/copy/{name}/gain"]) for name in ("within", "across"))
  assert flat["seed0/iclm/data/linked_partner_earlier"] >= 0
  assert (tmp_path / "results_positions.png").stat().st_size > 0  # the position-gain figure
