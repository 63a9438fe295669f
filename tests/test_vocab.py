"""Vocabularies as plug-ins: the byte default, a SentencePiece model trained here on the testbed
text, UL2 denoising and end-to-end UL2 runs on it, and the objective x layout x architecture
check."""

import dataclasses
import math

import numpy as np
import pytest
import seqio
import sentencepiece as spm

import tests.mixture_tasks  # noqa: F401  (registers the 400-document test_sched_* tasks)
from mixjax import infer
from mixjax import vocab as vocab_lib
from mixjax.data import features
from mixjax.data import pipeline
from mixjax.data import tasks
from mixjax.inference import restore
from mixjax.mixing import stream
from mixjax.models import transformer
from mixjax.testbed import corpus
from mixjax.testbed.config import CorpusConfig
from mixjax.training import checkpoints
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from tests import helpers

SP_PIECES = 800
SP_EXTRA_IDS = 100
TASK = f"{tests.mixture_tasks.PREFIX}_math"  # domain "math", 400 documents over all domains


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory) -> vocab_lib.VocabConfig:
  """A unigram SentencePiece model (800 pieces, T5's ids: 0 pad, 1 EOS, 2 unk) trained on the
  testbed text, with T5's 100 extra ids on top."""
  directory = tmp_path_factory.mktemp("sp")
  text = directory / "testbed.txt"
  text.write_text("\n".join(doc["text"] for doc in
                            corpus.iter_documents(CorpusConfig(num_docs=1000))))
  spm.SentencePieceTrainer.train(
      input=str(text), model_prefix=str(directory / "testbed"), vocab_size=SP_PIECES,
      model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      num_threads=1, minloglevel=2)
  return vocab_lib.VocabConfig(kind="sentencepiece", path=str(directory / "testbed.model"),
                               extra_ids=SP_EXTRA_IDS)


# ----------------------------------------------------------------------------------------------
# Ids.


def test_sentencepiece_sentinels_count_down_from_the_top_as_t5(sp_vocab):
  vocabulary = sp_vocab.build()
  assert vocabulary.vocab_size == SP_PIECES + SP_EXTRA_IDS
  assert vocab_lib.base_vocab_size(vocabulary) == SP_PIECES
  assert vocab_lib.max_sentinels(vocabulary) == SP_EXTRA_IDS - len(vocab_lib.MODE_TOKENS)
  for i in (0, 1, vocab_lib.max_sentinels(vocabulary) - 1):
    assert vocab_lib.sentinel_id(i, vocabulary) == vocabulary.vocab_size - 1 - i
    # SeqIO names the same id T5's sentinel i.
    assert vocabulary.tokenizer.id_to_piece(vocab_lib.sentinel_id(i, vocabulary)) == (
        f"\u2581<extra_id_{i}>")
  with pytest.raises(ValueError, match="out of range"):
    vocab_lib.sentinel_id(vocab_lib.max_sentinels(vocabulary), vocabulary)


def test_sentencepiece_mode_tokens_take_the_lowest_extra_ids(sp_vocab):
  vocabulary = sp_vocab.build()
  modes = [vocab_lib.mode_token_id(m, vocabulary) for m in vocab_lib.MODE_TOKENS]
  assert modes == [SP_PIECES, SP_PIECES + 1, SP_PIECES + 2]
  sentinels = {vocab_lib.sentinel_id(i, vocabulary)
               for i in range(vocab_lib.max_sentinels(vocabulary))}
  assert not sentinels & set(modes)
  assert sentinels | set(modes) == set(range(SP_PIECES, vocabulary.vocab_size))
  # Text never encodes to an extra id.
  ids = vocabulary.encode("Q: 12 + 30 = 42. The cat sat on the mat.")
  assert ids and max(ids) < SP_PIECES


def test_embedding_size_pads_the_vocabulary_to_a_multiple_of_128(sp_vocab):
  vocabulary = sp_vocab.build()
  size = vocab_lib.embedding_size(vocabulary)
  assert size % 128 == 0 and vocabulary.vocab_size <= size < vocabulary.vocab_size + 128
  assert size == 1024
  assert vocab_lib.embedding_size(seqio.PassThroughVocabulary(256)) == 256  # already a multiple


def test_byte_default_is_unchanged():
  vocabulary = vocab_lib.VocabConfig().build()
  assert vocabulary is vocab_lib.get_vocabulary()
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  assert vocabulary.encode("a") == [ord("a") + 3]
  assert [vocab_lib.mode_token_id(m) for m in vocab_lib.MODE_TOKENS] == [259, 260, 261]
  assert vocab_lib.sentinel_id(0) == vocabulary.vocab_size - 1 == 514
  assert vocab_lib.embedding_size() == 640
  assert pipeline.DataConfig("x", {"targets": 8}, 1).vocab == vocab_lib.VocabConfig()


@pytest.mark.parametrize("config, message", [
    (vocab_lib.VocabConfig(kind="wordpiece"),
     "Unknown vocabulary kind 'wordpiece'; valid: bytes, sentencepiece"),
    (vocab_lib.VocabConfig(kind="sentencepiece"), "needs path="),
    (vocab_lib.VocabConfig(extra_ids=100), "byte vocabulary takes no path and has 256 extra ids"),
    (vocab_lib.VocabConfig(path="x.model"), "byte vocabulary takes no path"),
])
def test_bad_vocab_config_is_a_clear_error(config, message):
  with pytest.raises(ValueError, match=message):
    config.build()


def test_too_few_extra_ids_is_a_clear_error(sp_vocab):
  with pytest.raises(ValueError, match="has 3 extra ids; mixjax needs more than 3"):
    dataclasses.replace(sp_vocab, extra_ids=3).build()


def test_register_kind_plugs_in_a_vocabulary(monkeypatch):
  small = seqio.ByteVocabulary(extra_ids=8)
  monkeypatch.setattr(vocab_lib, "_KINDS", dict(vocab_lib._KINDS))  # undone after the test
  vocab_lib.register_kind("small_bytes", lambda path, extra_ids: small)
  vocabulary = vocab_lib.VocabConfig(kind="small_bytes").build()
  assert vocabulary is small
  assert vocab_lib.sentinel_id(0, vocabulary) == small.vocab_size - 1
  assert vocab_lib.mode_token_id("[NLU]", vocabulary) == small.vocab_size - 8


# ----------------------------------------------------------------------------------------------
# UL2 denoising with the SentencePiece vocabulary (and the byte default), through SeqIO.


@pytest.mark.parametrize("kind", ["sentencepiece", "bytes"])
def test_ul2_prefix_lm_task_denoises_with_the_vocabularys_ids(sp_vocab, kind):
  config = sp_vocab if kind == "sentencepiece" else vocab_lib.VocabConfig()
  vocabulary, lengths = config.build(), {"inputs": 48, "targets": 48}
  name = tasks.seqio_task(TASK, "ul2", "prefix_lm", config)
  assert name.startswith(f"{TASK}_ul2_prefix_lm") and (name != tasks.seqio_task(
      TASK, "ul2", "prefix_lm")) == (kind == "sentencepiece")  # a task per vocabulary
  # seed=0: without one SeqIO draws the denoisers' map seeds at random (the test was flaky).
  ds = seqio.get_dataset(name, lengths, features.feature_converter("prefix_lm", pack=False),
                         dataset_split="validation", shuffle=False, num_epochs=1, seed=0,
                         trim_output_features=False, verbose=False)
  sentinels = {vocab_lib.sentinel_id(i, vocabulary)
               for i in range(vocab_lib.max_sentinels(vocabulary))}
  modes = {vocab_lib.mode_token_id(m, vocabulary) for m in vocab_lib.MODE_TOKENS}
  rebuilt, seen_sentinels, prefix_lm_examples, longest_inputs = [], set(), 0, 0
  for row in ds.as_numpy_iterator():
    tokens = row["decoder_target_tokens"]
    length = np.count_nonzero(tokens)
    scored = row["decoder_loss_weights"] > 0
    inputs, targets = tokens[:length][~scored[:length]], tokens[scored]
    assert int(row["decoder_causal_attention"].sum()) == inputs.size + 1
    assert inputs[-1] == targets[-1] == vocabulary.eos_id
    inputs, targets = inputs[:-1], targets[:-1]
    assert inputs[0] in modes and not modes & set(inputs[1:].tolist() + targets.tolist())
    longest_inputs = max(longest_inputs, inputs.size)
    extra = [t for t in np.concatenate([inputs[1:], targets])
             if t >= vocab_lib.base_vocab_size(vocabulary)]
    assert set(extra) <= sentinels
    input_sentinels = [t for t in inputs[1:] if t in sentinels]
    # T5's order: sentinel i is vocab_size - 1 - i, in inputs and targets alike.
    assert input_sentinels == [vocabulary.vocab_size - 1 - i for i in range(len(input_sentinels))]
    assert [t for t in targets if t in sentinels] == input_sentinels
    seen_sentinels |= set(input_sentinels)
    prefix_lm_examples += not input_sentinels
    rebuilt.append(helpers.reconstruct_chunk(inputs, targets, vocabulary))
  assert seen_sentinels and prefix_lm_examples  # both kinds of denoiser were drawn
  # Inputs and targets share the summed row: a prefix may be longer than the inputs length.
  assert longest_inputs > lengths["inputs"]
  docs = [vocabulary.encode(d["text"]) for d in corpus.iter_documents(
      CorpusConfig(num_docs=400), split="validation", domain="math")]
  np.testing.assert_array_equal(np.concatenate(rebuilt), np.concatenate(docs))


# ----------------------------------------------------------------------------------------------
# End to end.


def _train_ul2(model_dir, sp_vocab, converter, architecture, steps=4):
  kwargs = helpers.tiny_train_kwargs(model_dir, TASK, steps=steps, checkpoint_period=0)
  kwargs["data"] = pipeline.DataConfig(TASK, {"inputs": 32, "targets": 32}, batch_size=8,
                                       feature_converter=converter, objective="ul2",
                                       vocab=sp_vocab)
  kwargs["model"] = dataclasses.replace(kwargs["model"], architecture=architecture)
  kwargs["eval_config"] = dataclasses.replace(kwargs["eval_config"], max_probes=4)
  # Counting a few rows of the domain is enough (its size only feeds epoch accounting).
  kwargs["mixing"] = stream.MixingConfig(size_count_max_rows=64)
  loop.train(**kwargs)
  return metrics_lib.read_metrics(model_dir)


@pytest.mark.parametrize("converter, architecture", [("prefix_lm", "decoder"),
                                                     ("enc_dec", "encoder_decoder")])
def test_ul2_run_on_a_sentencepiece_vocabulary(tmp_path, sp_vocab, converter, architecture):
  metrics = _train_ul2(tmp_path, sp_vocab, converter, architecture)
  size = vocab_lib.embedding_size(sp_vocab.build())
  assert checkpoints.read_run_configs(tmp_path)["model"]["vocab_size"] == size
  losses = [m["loss"] for m in metrics if "loss" in m]
  assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
  evals = [m for m in metrics if "eval/math/loss" in m]
  assert len(evals) == 1 and math.isfinite(evals[0]["eval/math/loss"])
  assert any(k.startswith("probe/math/") for k in evals[0])
  model_config, data_config, params = restore.restore_for_inference(str(tmp_path))
  assert data_config.vocab == sp_vocab and model_config.vocab_size == size
  assert params["embedding"].shape == (size, model_config.d_model)
  if architecture == "decoder":  # the inference entry point reads the run's vocabulary
    outputs = infer.infer(str(tmp_path), ["Q: 12 + 30 ="], mode="S2S", max_new_tokens=4)
    assert len(outputs) == 1 and isinstance(outputs[0], str)


# ----------------------------------------------------------------------------------------------
# Objective x feature converter x architecture.


def test_objective_and_converter_are_checked_when_the_config_is_built():
  with pytest.raises(ValueError, match=(
      r"objective='lm' cannot train feature_converter='prefix_lm'; valid: "
      r"feature_converter='lm' with architecture='decoder'\.")):
    pipeline.DataConfig(TASK, {"targets": 32}, 8, objective="lm", feature_converter="prefix_lm")
  with pytest.raises(ValueError, match="feature_converter='prefix_lm' with architecture="
                                       "'decoder', feature_converter='enc_dec' with"):
    pipeline.DataConfig(TASK, {"targets": 32}, 8, objective="ul2", feature_converter="lm")


def test_train_checks_the_architecture_before_training(tmp_path):
  kwargs = helpers.tiny_train_kwargs(tmp_path / "run", TASK)
  kwargs["data"] = pipeline.DataConfig(TASK, {"inputs": 32, "targets": 32}, 8, objective="ul2",
                                       feature_converter="prefix_lm")
  kwargs["model"] = dataclasses.replace(kwargs["model"], architecture="encoder_decoder")
  with pytest.raises(ValueError, match=(
      r"objective='ul2' cannot train feature_converter='prefix_lm' with "
      r"architecture='encoder_decoder'; valid: .*"
      r"feature_converter='enc_dec' with architecture='encoder_decoder'")):
    loop.train(**kwargs)
  assert not (tmp_path / "run").exists()  # nothing was written: no run started
