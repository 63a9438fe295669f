"""Vocabularies: any `seqio.Vocabulary` with extra ids; UTF-8 bytes by default, SentencePiece and
Hugging Face `tokenizer.json` files too.

Every vocabulary mixjax trains on reserves its top `extra_ids` ids, as T5 does:

  ... base vocabulary ... | mode tokens (lowest extra ids) | ... | sentinels (top, counting down)

UL2's mode tokens ([NLU]/[NLG]/[S2S]) take the lowest extra ids; sentinels count down from the top
(`sentinel_id(0) == vocab_size - 1`), so a SentencePiece model with T5's 100 extra ids works as is.
The byte vocabulary (the default) is `0 pad | 1 eos | 2 unk | 3..258 bytes | 259.. extra ids`.

Special ids. SeqIO (packing, loss weights `targets > 0`) treats id 0 as padding, so each kind
states what id 0 is and refuses a tokenizer where it would be a real token:

  kind            pad (0)                    eos                        bos        unk
  bytes           0                          1                          none       2
  sentencepiece   the model's pad, or its    the model's eos            never      the model's unk
                  unk at 0 (Llama: <unk>)                               added
  hf              id 0, which must be a      `eos_token` of the         never      the model's
                  special token (Llama's     `tokenizer_config.json`    added      `unk_token`
                  <unk>, GPT-style <pad>)    beside `tokenizer.json`               (or none)

An unk at id 0 doubles as padding: text the tokenizer cannot represent is masked from the loss
(Llama's byte fallback never produces it). A tokenizer whose id 0 is an ordinary token (Qwen2's
"!") is refused, since every such token would silently become padding; no id remapping is done.
No kind adds BOS: the tasks append EOS to each document (SeqIO's `add_eos`), as T5 does.
Extra ids (mode tokens, sentinels) always sit above the tokenizer's own ids, added tokens
included; a `tokenizer.json` takes 100 extra ids unless told otherwise.

A run names its vocabulary with a `VocabConfig` (gin-configurable, JSON-serialisable, so tools
rebuild it from `run_configs.json`); `VocabConfig.build()` returns the shared `seqio.Vocabulary`.
Other kinds plug in with `register_kind`. Imports nothing from mixjax.
"""

import dataclasses
import functools
import json
import os
from typing import Callable, Sequence

import gin
import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf
import tokenizers

BYTE_EXTRA_IDS = 256
MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")
EMBEDDING_MULTIPLE = 128  # embedding tables padded so vocab-sharded matmuls tile cleanly

# kind -> builder(path, extra_ids) -> seqio.Vocabulary
_KINDS: dict[str, Callable[[str | None, int | None], seqio.Vocabulary]] = {}


def register_kind(kind: str, builder: Callable[[str | None, int | None], seqio.Vocabulary]):
  """Adds a vocabulary kind: `builder(path, extra_ids)` returns a `seqio.Vocabulary`."""
  _KINDS[kind] = builder


@functools.lru_cache(maxsize=None)
def get_vocabulary() -> seqio.ByteVocabulary:
  """The shared byte vocabulary (cached: SeqIO compares vocabularies by identity)."""
  return seqio.ByteVocabulary(extra_ids=BYTE_EXTRA_IDS)


def _bytes(path, extra_ids):
  if path is not None or extra_ids not in (None, BYTE_EXTRA_IDS):
    raise ValueError(f"The byte vocabulary takes no path and has {BYTE_EXTRA_IDS} extra ids; "
                     f"got path={path!r}, extra_ids={extra_ids!r}.")
  return get_vocabulary()


DEFAULT_EXTRA_IDS = 100  # SentencePiece and tokenizer.json kinds: T5's count


@functools.lru_cache(maxsize=None)
def _sentencepiece(path, extra_ids):
  if not path:
    raise ValueError("VocabConfig(kind='sentencepiece') needs path= a SentencePiece .model file.")
  processor = spm.SentencePieceProcessor(model_file=path)
  if seqio.PAD_ID not in (processor.pad_id(), processor.unk_id()):
    raise ValueError(
        f"SentencePiece model {path}: id 0 is {processor.id_to_piece(0)!r}, neither its pad "
        "nor its unk, but SeqIO treats id 0 as padding. Train it with pad_id=0 (T5) or "
        "unk_id=0 (Llama).")
  extra_ids = DEFAULT_EXTRA_IDS if extra_ids is None else extra_ids
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


def _special_token(config: dict, name: str) -> str | None:
  """A `tokenizer_config.json` entry such as `eos_token` (a string or an AddedToken dict)."""
  value = config.get(name)
  return value.get("content") if isinstance(value, dict) else value


class HFTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizer.json` (the `tokenizers` package) as a SeqIO vocabulary, with the
  policy of the module docstring: id 0 is padding and must be a special token, EOS from the
  `tokenizer_config.json` beside it, no BOS added, extra ids on top.

  `encode_tf` / `decode_tf` run the Rust tokenizer through `tf.numpy_function`, so they work in
  graph mode (inside `tf.data` maps), one string per call as SeqIO's tokenizer does.
  """

  def __init__(self, path: str, extra_ids: int = DEFAULT_EXTRA_IDS):
    self.path = path
    self.tokenizer = tokenizers.Tokenizer.from_file(path)
    config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    config = {}
    if os.path.exists(config_path):
      with open(config_path) as f:
        config = json.load(f)
    self._eos_id = self._id_of(_special_token(config, "eos_token"), "eos_token", config_path)
    bos = _special_token(config, "bos_token")
    self._bos_id = None if bos is None else self._id_of(bos, "bos_token", config_path)
    with open(path) as f:
      unk = json.load(f).get("model", {}).get("unk_token")
    self._unk_id = None if unk is None else self.tokenizer.token_to_id(unk)
    special_ids = {i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}
    if seqio.PAD_ID not in special_ids:
      raise ValueError(
          f"Tokenizer {path}: id 0 is the ordinary token {self.tokenizer.id_to_token(0)!r}, but "
          "SeqIO treats id 0 as padding, so every occurrence would be masked out. Use a "
          "tokenizer whose id 0 is a special token (<unk>, <pad>, ...); mixjax does not remap "
          "ids.")
    super().__init__(extra_ids=extra_ids)

  def _id_of(self, token: str | None, name: str, config_path: str) -> int:
    token_id = None if token is None else self.tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"Tokenizer {self.path}: {name} {token!r} (from {config_path}) is not in "
                       f"its vocabulary; write {config_path} with the {name} the model uses.")
    return token_id

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    base = self._base_vocab_size  # extra ids have no text (as SentencePiece's sentinels)
    return self.tokenizer.decode([int(i) for i in ids if 0 < int(i) < base],
                                 skip_special_tokens=False)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(text):
      return np.asarray(self._encode(text.decode("utf-8")), np.int32)
    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(ids_array):
      rows = ids_array.reshape(-1, ids_array.shape[-1]) if ids_array.ndim else ids_array[None]
      texts = [self._decode(row[row != seqio.PAD_ID].tolist()).encode("utf-8") for row in rows]
      return np.asarray(texts, object).reshape(ids_array.shape[:-1])
    text = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    text.set_shape(ids.shape[:-1])
    return text

  def __eq__(self, other):
    return (isinstance(other, HFTokenizerVocabulary) and self.path == other.path
            and self.extra_ids == other.extra_ids)

  def __hash__(self):
    return hash((self.path, self.extra_ids))


@functools.lru_cache(maxsize=None)
def _hf_tokenizer(path, extra_ids):
  if not path or not os.path.isfile(path):
    raise ValueError(f"VocabConfig(kind='hf') needs path= a tokenizer.json file; got {path!r}.")
  return HFTokenizerVocabulary(path, DEFAULT_EXTRA_IDS if extra_ids is None else extra_ids)


register_kind("bytes", _bytes)
register_kind("sentencepiece", _sentencepiece)
register_kind("hf", _hf_tokenizer)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """Which vocabulary a run uses: `kind` ('bytes' | 'sentencepiece' | 'hf' (a tokenizer.json) |
  a registered kind)."""
  kind: str = "bytes"
  path: str | None = None
  extra_ids: int | None = None  # None: the kind's default (bytes 256, SentencePiece / hf 100)

  def build(self) -> seqio.Vocabulary:
    if self.kind not in _KINDS:
      raise ValueError(f"Unknown vocabulary kind {self.kind!r}; valid: {', '.join(_KINDS)}.")
    vocabulary = _KINDS[self.kind](self.path, self.extra_ids)
    if vocabulary.extra_ids <= len(MODE_TOKENS):
      raise ValueError(f"Vocabulary {self} has {vocabulary.extra_ids} extra ids; mixjax needs "
                       f"more than {len(MODE_TOKENS)} (mode tokens + sentinels): set extra_ids.")
    return vocabulary


def _or_default(vocabulary: seqio.Vocabulary | None) -> seqio.Vocabulary:
  return get_vocabulary() if vocabulary is None else vocabulary


def base_vocab_size(vocabulary: seqio.Vocabulary | None = None) -> int:
  """Ids below this are the base vocabulary; extra ids start here."""
  vocabulary = _or_default(vocabulary)
  return vocabulary.vocab_size - vocabulary.extra_ids


def mode_token_id(name: str, vocabulary: seqio.Vocabulary | None = None) -> int:
  """Id of a UL2 mode token such as '[NLU]'."""
  if name not in MODE_TOKENS:
    raise ValueError(f"Unknown mode token {name!r}; valid: {', '.join(MODE_TOKENS)}.")
  return base_vocab_size(vocabulary) + MODE_TOKENS.index(name)


def max_sentinels(vocabulary: seqio.Vocabulary | None = None) -> int:
  """How many distinct sentinel ids exist (extra ids not taken by mode tokens)."""
  return _or_default(vocabulary).extra_ids - len(MODE_TOKENS)


def is_sentinel(token: int, vocabulary: seqio.Vocabulary | None = None) -> bool:
  """Whether `token` is one of the sentinel ids (the top `max_sentinels` of the vocabulary)."""
  return token > _or_default(vocabulary).vocab_size - 1 - max_sentinels(vocabulary)


def sentinel_id(i: int, vocabulary: seqio.Vocabulary | None = None) -> int:
  """Id of the i-th sentinel (0-based), counting down from the top of the vocabulary (T5)."""
  if not 0 <= i < max_sentinels(vocabulary):
    raise ValueError(f"Sentinel index {i} out of range [0, {max_sentinels(vocabulary)}).")
  return _or_default(vocabulary).vocab_size - 1 - i


def embedding_size(vocabulary: seqio.Vocabulary | None = None) -> int:
  """The model's embedding rows for a vocabulary: its size rounded up to a multiple of 128."""
  size = _or_default(vocabulary).vocab_size
  return -(-size // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE
