"""Tokenizers as SeqIO vocabularies: a `tokenizer.json` (the `tokenizers` package) with its
pad/eos/bos/unk policy and extra ids on top, encoding in graph mode inside SeqIO's tf.data maps
(lm and UL2 tasks of the real registry), and the refusals: id 0 an ordinary token, no EOS, a
SentencePiece model whose id 0 is neither pad nor unk."""

import os

import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf

import tests.mixture_tasks  # noqa: F401  (registers the 400-document test_sched_* tasks)
from mixjax import vocab as vocab_lib
from mixjax.data import features
from mixjax.data import tasks
from mixjax.testbed import corpus
from mixjax.testbed.config import CorpusConfig
from tests import hf_tokenizers

VOCAB = 500
TASK = f"{tests.mixture_tasks.PREFIX}_math"


def _texts(num_docs=400):
  return [d["text"] for d in corpus.iter_documents(CorpusConfig(num_docs=num_docs))]


@pytest.fixture(scope="module")
def hf_config(tmp_path_factory) -> vocab_lib.VocabConfig:
  path = hf_tokenizers.save(hf_tokenizers.train_bpe(_texts(), VOCAB),
                            str(tmp_path_factory.mktemp("bpe")), eos_token="</s>",
                            bos_token="<s>", unk_token="<unk>")
  return vocab_lib.VocabConfig(kind="hf", path=path)


def test_ids_follow_the_stated_policy(hf_config):
  vocabulary = hf_config.build()
  ids = (vocabulary.pad_id, vocabulary.unk_id, vocabulary.bos_id, vocabulary.eos_id)
  assert ids == (0, 0, 1, 2)
  assert vocabulary.vocab_size == VOCAB + vocab_lib.DEFAULT_EXTRA_IDS
  assert vocab_lib.base_vocab_size(vocabulary) == VOCAB
  assert vocab_lib.mode_token_id("[NLU]", vocabulary) == VOCAB  # lowest extra id
  assert vocab_lib.sentinel_id(0, vocabulary) == VOCAB + 99      # top, counting down
  assert hf_config.build() is vocabulary  # cached: SeqIO compares vocabularies by identity
  text = "Libo Vend is 42, living in Bergen."
  ids = vocabulary.encode(text)
  assert ids and 0 not in ids and vocabulary.bos_id not in ids  # no BOS added
  assert vocabulary.decode(ids) == text
  # Extra ids and padding have no text; decoding stops after EOS (SeqIO's contract).
  assert vocabulary.decode(ids + [vocab_lib.sentinel_id(0, vocabulary), 0]) == text
  assert vocabulary.decode(ids + [2] + ids) == text + "</s>"


def test_encoding_and_decoding_work_in_graph_mode(hf_config):
  vocabulary = hf_config.build()
  texts = ["two plus two is four", "Bergen"]
  encode = tf.function(vocabulary.encode_tf, input_signature=[tf.TensorSpec([], tf.string)])
  for text in texts:
    assert encode(tf.constant(text)).numpy().tolist() == vocabulary.encode(text)
  width = max(len(vocabulary.encode(t)) for t in texts)
  padded = np.zeros((2, width), np.int32)
  for i, t in enumerate(texts):
    padded[i, :len(vocabulary.encode(t))] = vocabulary.encode(t)
  decode = tf.function(vocabulary.decode_tf)
  assert [t.decode() for t in decode(tf.constant(padded)).numpy()] == texts
  assert decode(tf.constant(padded[0])).numpy().decode() == texts[0]


def test_an_lm_task_tokenizes_inside_tf_data(hf_config):
  vocabulary = hf_config.build()
  name = tasks.seqio_task(TASK, "lm", "lm", hf_config)
  ds = seqio.get_dataset(name, {"targets": 4096}, features.feature_converter("lm", pack=False),
                         dataset_split="validation", shuffle=False, num_epochs=1, verbose=False)
  docs = [d["text"] for d in corpus.iter_documents(CorpusConfig(num_docs=400),
                                                   split="validation", domain="math")]
  rows = [r["decoder_target_tokens"] for r in ds.take(len(docs)).as_numpy_iterator()]
  assert len(rows) == len(docs)
  for row, doc in zip(rows, docs):
    ids = row[row > 0].tolist()
    assert ids == vocabulary.encode(doc) + [vocabulary.eos_id]


def test_ul2_spans_use_the_extra_ids_on_top(hf_config):
  vocabulary = hf_config.build()
  name = tasks.seqio_task(TASK, "ul2", "prefix_lm", hf_config)
  ds = seqio.get_dataset(name, {"inputs": 48, "targets": 48},
                         features.feature_converter("prefix_lm", pack=False),
                         dataset_split="validation", shuffle=False, num_epochs=1, seed=0,
                         trim_output_features=False, verbose=False)  # seeded denoisers
  sentinels = {vocab_lib.sentinel_id(i, vocabulary)
               for i in range(vocab_lib.max_sentinels(vocabulary))}
  modes = {vocab_lib.mode_token_id(m, vocabulary) for m in vocab_lib.MODE_TOKENS}
  seen = set()
  for row in ds.take(40).as_numpy_iterator():
    tokens = row["decoder_target_tokens"]
    seen |= {int(t) for t in tokens if t >= VOCAB}
  assert seen & sentinels and seen & modes and seen <= sentinels | modes


def test_a_tokenizer_whose_id_0_is_an_ordinary_token_is_refused(tmp_path):
  # No special tokens first: id 0 is a byte ("!"), as in Qwen2's tokenizer.
  tok = hf_tokenizers.train_bpe(_texts(100), 300, specials=())
  tok.add_special_tokens(["</s>"])
  path = hf_tokenizers.save(tok, str(tmp_path), eos_token="</s>")
  with pytest.raises(ValueError, match="id 0 is the ordinary token '!'"):
    vocab_lib.VocabConfig(kind="hf", path=path).build()


def test_a_tokenizer_without_an_eos_is_refused(tmp_path):
  path = hf_tokenizers.save(hf_tokenizers.train_bpe(_texts(100), 300), str(tmp_path))
  with pytest.raises(ValueError, match="eos_token None"):
    vocab_lib.VocabConfig(kind="hf", path=path).build()
  with pytest.raises(ValueError, match="needs path= a tokenizer.json"):
    vocab_lib.VocabConfig(kind="hf", path=str(tmp_path / "missing.json")).build()


def _sentencepiece(directory, **ids) -> str:
  text = os.path.join(directory, "text.txt")
  with open(text, "w") as f:
    f.write("\n".join(_texts(200)))
  prefix = os.path.join(directory, "sp")
  spm.SentencePieceTrainer.train(input=text, model_prefix=prefix, vocab_size=400,
                                 model_type="unigram", num_threads=1, minloglevel=2, **ids)
  return prefix + ".model"


def test_sentencepiece_with_llamas_ids_unk_at_0_and_no_pad(tmp_path):
  path = _sentencepiece(str(tmp_path), unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                        byte_fallback=True)
  vocabulary = vocab_lib.VocabConfig(kind="sentencepiece", path=path).build()
  assert (vocabulary.pad_id, vocabulary.unk_id, vocabulary.eos_id) == (0, 0, 2)
  assert 0 not in vocabulary.encode("Bergen ünïcode ☃")  # byte fallback: unk never emitted


def test_sentencepiece_whose_id_0_is_neither_pad_nor_unk_is_refused(tmp_path):
  path = _sentencepiece(str(tmp_path), bos_id=0, eos_id=1, unk_id=2, pad_id=-1)
  with pytest.raises(ValueError, match="id 0 is '<s>', neither its pad nor its unk"):
    vocab_lib.VocabConfig(kind="sentencepiece", path=path).build()
