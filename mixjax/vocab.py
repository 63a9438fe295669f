"""Vocabularies: any `seqio.Vocabulary` with extra ids; UTF-8 bytes by default, SentencePiece too.

Every vocabulary mixjax trains on reserves its top `extra_ids` ids, as T5 does:

  ... base vocabulary ... | mode tokens (lowest extra ids) | ... | sentinels (top, counting down)

UL2's mode tokens ([NLU]/[NLG]/[S2S]) take the lowest extra ids; sentinels count down from the top
(`sentinel_id(0) == vocab_size - 1`), so a SentencePiece model with T5's 100 extra ids works as is.
The byte vocabulary (the default) is `0 pad | 1 eos | 2 unk | 3..258 bytes | 259.. extra ids`.

A run names its vocabulary with a `VocabConfig` (gin-configurable, JSON-serialisable, so tools
rebuild it from `run_configs.json`); `VocabConfig.build()` returns the shared `seqio.Vocabulary`.
Other kinds (e.g. Hugging Face tokenizers) plug in with `register_kind`. Imports nothing from mixjax.
"""

import dataclasses
import functools
from typing import Callable

import gin
import seqio

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


@functools.lru_cache(maxsize=None)
def _sentencepiece(path, extra_ids):
  if not path:
    raise ValueError("VocabConfig(kind='sentencepiece') needs path= a SentencePiece .model file.")
  return seqio.SentencePieceVocabulary(path, extra_ids=100 if extra_ids is None else extra_ids)


register_kind("bytes", _bytes)
register_kind("sentencepiece", _sentencepiece)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """Which vocabulary a run uses: `kind` ('bytes' | 'sentencepiece' | a registered kind)."""
  kind: str = "bytes"
  path: str | None = None
  extra_ids: int | None = None  # None: the kind's default (bytes 256, SentencePiece 100)

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


def sentinel_id(i: int, vocabulary: seqio.Vocabulary | None = None) -> int:
  """Id of the i-th sentinel (0-based), counting down from the top of the vocabulary (T5)."""
  if not 0 <= i < max_sentinels(vocabulary):
    raise ValueError(f"Sentinel index {i} out of range [0, {max_sentinels(vocabulary)}).")
  return _or_default(vocabulary).vocab_size - 1 - i


def embedding_size(vocabulary: seqio.Vocabulary | None = None) -> int:
  """The model's embedding rows for a vocabulary: its size rounded up to a multiple of 128."""
  size = _or_default(vocabulary).vocab_size
  return -(-size // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE
