"""Targets (`MIXING_TARGET`) resolve to eval-set weights; the output contract trains on its weights;
testbed targets are new held-out documents of their parts and change no domain's output."""

import json

import gin
import numpy as np
import pytest

from mixjax import gin_utils
from mixjax.data import pipeline
from mixjax.mixing import output
from mixjax.mixing import schedules
from mixjax.mixing import target as target_lib
from mixjax.testbed import corpus
from mixjax.testbed import targets
import mixjax_tasks

DOMAINS = ("bios", "code", "math", "prose", "web")


def test_targets_resolve_to_eval_set_weights():
  mixjax_tasks.register_all()
  math = target_lib.resolve("math", DOMAINS)
  assert math.eval_tasks == {} and math.weights_S.tolist() == [0, 0, 1, 0, 0]
  mixed = target_lib.resolve({"bios": 3.0, "math": 1.0}, DOMAINS)
  np.testing.assert_allclose(mixed.weights_S, [0.75, 0, 0.25, 0, 0])
  np.testing.assert_allclose(mixed.loss_K(np.ones((2, 5)) * [1, 2, 3, 4, 5]), [1.5, 1.5])
  task = target_lib.resolve("mixjax_synthetic_target_bios3_math1", DOMAINS)
  assert task.eval_tasks == {"target": "mixjax_synthetic_target_bios3_math1"}
  assert task.eval_sets[-1] == "target" and task.weights_S.tolist() == [0] * 5 + [1]
  with pytest.raises(ValueError, match="neither a domain"):
    target_lib.resolve("nope", DOMAINS)
  with pytest.raises(ValueError, match="unknown domains"):
    target_lib.resolve({"nope": 1.0}, DOMAINS)


def test_testbed_targets_are_new_heldout_documents_of_their_parts():
  config = corpus.CorpusConfig(num_docs=400)
  docs = targets.documents(config, "bios3_math1", 40)
  assert [d["domain"] for d in docs].count("bios") == 30 and len(docs) == 40
  validation = {d["text"] for d in corpus.iter_documents(config, "validation")}
  train = {d["text"] for d in corpus.iter_documents(config, "train")}
  assert not {d["text"] for d in docs} & (validation | train)
  assert targets.documents(config, "bios3_math1", 40) == docs  # deterministic
  assert "target_bios3_math1" not in corpus.DOMAINS  # not a domain: no corpus output changes


def test_mixture_gin_trains_on_the_written_weights(tmp_path):
  weights = output.write(str(tmp_path), {"bios": 3.0, "math": 1.0, "web": 0.0}, "a test",
                         {"figure": 1.0})
  assert json.loads((tmp_path / "weights.json").read_text()) == weights
  assert weights == {"bios": 0.75, "math": 0.25, "web": 0.0}
  gin.clear_config()
  try:
    gin_utils.parse_and_bind(["--gin_file=gin/runs/tiny.gin",
                              f"--gin_file={tmp_path / 'mixture.gin'}"], prog="tests")
    mixjax_tasks.register_all()
    data = pipeline.DataConfig()
  finally:
    gin.clear_config()
  ctx = schedules.context_for(data.mixture_or_task_name, 10, data.batch_size)
  resolved = data.schedule.resolve(ctx)
  got = dict(zip(ctx.domains, resolved.weights_D(0)))
  assert got == pytest.approx({"bios": 0.75, "code": 0.0, "math": 0.25, "prose": 0.0, "web": 0.0})
