"""UL2 against causal LM: the held-out infilling examples (known answers: they reconstruct their
documents, the noise share is R1's) and benchmarks/ul2_experiment.py end to end, tiny."""

import importlib.util
import json
import math
import os

import numpy as np

from mixjax import vocab as vocab_lib
from mixjax.experiments import ul2_loss

_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "benchmarks", "ul2_experiment.py")


def _documents(seed=0, count=12):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(3, 200, size=rng.integers(5, 700))) for _ in range(count)]


def test_infill_examples_tile_each_document_with_r1_spans():
  vocabulary = vocab_lib.get_vocabulary()
  docs = _documents()
  examples = ul2_loss.infill_examples(docs, 256, vocabulary, seed=3)
  nlu = vocab_lib.mode_token_id("[NLU]", vocabulary)
  noise = total = 0
  for doc, chunks in zip(docs, examples):
    assert [t for e in chunks for t in e.tokens] == doc  # chunks tile the document, in order
    for e in chunks:
      assert e.inputs[0] == nlu and len(e.inputs) + len(e.targets) + 2 <= 256
      assert ul2_loss.reconstruct(e.inputs[1:], e.targets, vocabulary) == (list(e.tokens),
                                                                           list(e.noise_T))
      noise, total = noise + sum(e.noise_T), total + len(e.tokens)
  assert 0.12 < noise / total < 0.18  # R1 corrupts 15%
  again = ul2_loss.infill_examples(docs, 256, vocabulary, seed=3)
  assert again == examples and ul2_loss.infill_examples(docs, 256, vocabulary, seed=4) != examples


def test_reconstruct_puts_each_span_back_at_its_sentinel():
  vocabulary = vocab_lib.get_vocabulary()
  s0, s1 = vocab_lib.sentinel_id(0, vocabulary), vocab_lib.sentinel_id(1, vocabulary)
  tokens, noise = ul2_loss.reconstruct([10, s0, 13, s1], [s0, 11, 12, s1, 14], vocabulary)
  assert tokens == [10, 11, 12, 13, 14] and noise == [False, True, True, False, True]


def test_experiment_scores_both_arms_on_the_same_heldout_tokens(tmp_path):
  spec = importlib.util.spec_from_file_location("ul2_experiment", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  out = tmp_path / "results.json"
  module.main(["--seeds", "0", "--steps", "2", "--docs_per_domain", "4",
               "--gin_file", "gin/quickstart.gin", "--gin_file", "gin/models/tiny.gin",
               "--gin", "BATCH_SIZE=8", "--workdir", str(tmp_path / "work"),
               "--json", str(out)])
  flat = json.loads(out.read_text())
  for arm in ("lm", "ul2", "ul2-lm"):
    for kind, name in (("infill", "span_loss"), ("continuation", "loss")):
      for domain in ("web", "bios", "math", "code", "prose", "mean"):
        assert math.isfinite(flat[f"mean/{arm}/{kind}/{domain}/{name}"])
  assert math.isnan(flat["mean/lm/infill/mean/span_loss_other_inputs"])  # an LM has no inputs
  assert math.isfinite(flat["mean/ul2/infill/mean/span_loss_other_inputs"])
  # Two steps from random weights: every loss is near log(vocab), far above a trained model's.
  assert flat["mean/lm/continuation/mean/loss"] > 3 and flat["mean/ul2/infill/mean/span_loss"] > 3
