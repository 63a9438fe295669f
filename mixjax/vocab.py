"""The project vocabulary: UTF-8 bytes plus reserved ids for mode tokens and sentinels.

Layout (seqio.ByteVocabulary with extra ids):

  0 pad | 1 eos | 2 unk | 3..258 bytes | 259.. mode tokens | ..vocab_size-1 sentinels

Mode tokens (UL2's [NLU]/[NLG]/[S2S]) take the lowest extra ids; sentinels count down from the
top of the vocabulary, as in T5 (`sentinel(0) == vocab_size - 1`).
"""

import functools

import seqio

NUM_EXTRA_IDS = 256
MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")
# Embedding tables are padded to a multiple of 128 so vocab-sharded matmuls tile cleanly.
PADDED_VOCAB_SIZE = 640


@functools.lru_cache(maxsize=None)
def get_vocabulary() -> seqio.ByteVocabulary:
  """Returns the shared byte vocabulary (cached: SeqIO compares vocabularies by identity)."""
  return seqio.ByteVocabulary(extra_ids=NUM_EXTRA_IDS)


def base_vocab_size() -> int:
  """Ids below this are pad/eos/unk and bytes; extra ids start here."""
  return get_vocabulary().vocab_size - NUM_EXTRA_IDS


def mode_token_id(name: str) -> int:
  """Id of a UL2 mode token such as '[NLU]'."""
  if name not in MODE_TOKENS:
    raise ValueError(f"Unknown mode token {name!r}; valid: {', '.join(MODE_TOKENS)}.")
  return base_vocab_size() + MODE_TOKENS.index(name)


def max_sentinels() -> int:
  """How many distinct sentinel ids exist (extra ids not taken by mode tokens)."""
  return NUM_EXTRA_IDS - len(MODE_TOKENS)


def sentinel_id(i: int) -> int:
  """Id of the i-th sentinel (0-based), counting down from the top of the vocabulary."""
  if not 0 <= i < max_sentinels():
    raise ValueError(f"Sentinel index {i} out of range [0, {max_sentinels()}).")
  return get_vocabulary().vocab_size - 1 - i
