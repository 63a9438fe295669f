"""Document embedders for ICLM ordering.

An embedder is a small picklable config with two methods (so Beam workers can carry it):

  fit(texts) -> state     statistics from a sample of the corpus (a dict of arrays; may be empty)
  embed(texts, state)     -> emb_ND float32, rows L2-normalised (inner product = cosine)

`hashed` (the default) needs no download: TF-IDF over hashed word unigrams and bigrams, projected
to `dim` dimensions by a sparse random sign projection (each n-gram adds ±idf to `_SLOTS` of the
dimensions picked by its hash). Tokenising, hashing and projecting run as numpy array programs
over a whole batch of texts at once, with no Python work per word.

`sentence_transformers` (the `[embed]` extra) loads a model from a local path.
`MeanPooledLMEmbedder` mean-pools a language model's hidden states, as the public ICLM code
mean-pools Contriever's over the first 510 tokens; the `checkpoint` embedder, which runs it over a
trained mixjax decoder, lives in `mixjax.inference.embedder` (it needs the model and checkpoint
code, above this layer) and registers itself when imported. `mixjax.iclm.stages.EMBEDDERS` is the
registry of names.
"""

import dataclasses
from typing import Callable, Protocol, Sequence

import numpy as np

from mixjax.iclm import io as iclm_io

State = dict[str, np.ndarray]

# Word bytes: ASCII letters and digits (after lower-casing) and every byte of a multi-byte UTF-8
# character, so words in any script stay whole.
_WORD_BYTE = np.zeros(256, bool)
_WORD_BYTE[ord("a"):ord("z") + 1] = True
_WORD_BYTE[ord("0"):ord("9") + 1] = True
_WORD_BYTE[0x80:] = True
_POLY = np.uint64(0x100000001B3)      # odd, so its powers never vanish modulo 2**64
_BIGRAM = np.uint64(0x9E3779B97F4A7C15)
_IDF_SALT = np.uint64(0xD6E8FEB86659FD93)
_SLOTS = 4                            # projection entries per n-gram: 16 hash bits each
_IDF_BITS = 20                        # IDF table size 2**20: rare n-grams rarely share a bucket


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: spreads every input bit over all output bits (uint64 wraps)."""
  x = x ^ (x >> np.uint64(30))
  x = x * np.uint64(0xBF58476D1CE4E5B9)
  x = x ^ (x >> np.uint64(27))
  x = x * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Hashes every word of every text: returns `(doc_W, hash_W)`, words in reading order."""
  encoded = [t.encode("utf-8", "replace") for t in texts]
  # Texts are joined with a separator byte that is not a word byte, so no word spans two texts.
  buf = np.frombuffer(b"\n".join(encoded).lower() + b"\n", np.uint8)
  is_word = _WORD_BYTE[buf]
  edge = np.diff(is_word.astype(np.int8), prepend=np.int8(0))
  start_W = np.flatnonzero(edge == 1)
  if not len(start_W):
    return np.zeros(0, np.int64), np.zeros(0, np.uint64)
  len_W = np.flatnonzero(edge == -1) - start_W
  # Polynomial hash of each word: sum of (byte + 1) * P**position, via one segmented sum.
  seg_W = np.cumsum(len_W) - len_W
  pos = np.arange(int(len_W.sum())) - np.repeat(seg_W, len_W)
  pow_P = np.ones(int(len_W.max()), np.uint64)
  pow_P[1:] = np.cumprod(np.full(len(pow_P) - 1, _POLY, np.uint64))
  contrib = (buf[is_word].astype(np.uint64) + np.uint64(1)) * pow_P[pos]
  hash_W = _mix64(np.add.reduceat(contrib, seg_W))
  doc_starts = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]])
  doc_W = np.searchsorted(doc_starts, start_W, side="right") - 1
  return doc_W, hash_W


def ngram_features(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Hashed word unigrams and bigrams of each text: `(doc_F, hash_F)`, one row per occurrence."""
  doc_W, hash_W = _word_hashes(texts)
  same_doc = doc_W[:-1] == doc_W[1:]
  bigram = _mix64(hash_W[:-1][same_doc] * _BIGRAM + hash_W[1:][same_doc])
  return np.concatenate([doc_W, doc_W[:-1][same_doc]]), np.concatenate([hash_W, bigram])


def _idf_bucket(hash_F: np.ndarray) -> np.ndarray:
  # A second hash, independent of the projection bits, picks the IDF bucket.
  return (_mix64(hash_F ^ _IDF_SALT) >> np.uint64(64 - _IDF_BITS)).astype(np.int64)


def _normalise(emb_ND: np.ndarray) -> np.ndarray:
  norm_N1 = np.linalg.norm(emb_ND, axis=1, keepdims=True)
  return (emb_ND / np.maximum(norm_N1, 1e-12)).astype(np.float32)


def _batches(texts: Sequence[str], size: int):
  for s in range(0, len(texts), size):
    yield texts[s:s + size]


class Embedder(Protocol):
  dim: int

  def fit(self, texts: Sequence[str]) -> State:
    ...

  def embed(self, texts: Sequence[str], state: State) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class HashedTfidfEmbedder:
  """TF-IDF over hashed word 1- and 2-grams, sign-projected to `dim` dimensions."""
  dim: int = 256
  batch_size: int = 2048

  def __post_init__(self):
    if not 1 <= self.dim <= 1 << 15:
      raise ValueError(f"dim={self.dim} must be in [1, 32768] (16 hash bits per projection slot).")

  def fit(self, texts: Sequence[str]) -> State:
    """Document frequencies over `texts` -> smoothed IDF per hash bucket (as scikit-learn's)."""
    df_B = np.zeros(1 << _IDF_BITS, np.int64)
    for batch in _batches(texts, self.batch_size):
      doc_F, hash_F = ngram_features(batch)
      pairs = iclm_io.sorted_unique((doc_F << _IDF_BITS) | _idf_bucket(hash_F))
      df_B += np.bincount(pairs & ((1 << _IDF_BITS) - 1), minlength=len(df_B))
    idf_B = np.log((1.0 + len(texts)) / (1.0 + df_B)) + 1.0
    return {"idf_B": idf_B.astype(np.float32)}

  def embed(self, texts: Sequence[str], state: State) -> np.ndarray:
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    return np.concatenate([self._embed_batch(b, state["idf_B"])
                           for b in _batches(texts, self.batch_size)])

  def _embed_batch(self, texts: Sequence[str], idf_B: np.ndarray) -> np.ndarray:
    doc_F, hash_F = ngram_features(texts)
    weight_F = idf_B[_idf_bucket(hash_F)].astype(np.float64)
    emb = np.zeros(len(texts) * self.dim)
    for slot in range(_SLOTS):
      bits_F = (hash_F >> np.uint64(16 * slot)).astype(np.int64) & 0xFFFF
      sign_F = 1.0 - 2.0 * (bits_F >> 15)
      cell_F = doc_F * self.dim + (bits_F & 0x7FFF) % self.dim
      emb += np.bincount(cell_F, weights=sign_F * weight_F, minlength=len(emb))
    return _normalise(emb.reshape(len(texts), self.dim))


class PretrainedEmbedder:
  """An embedder with nothing to fit on the corpus: `fit` returns an empty state."""

  def fit(self, texts: Sequence[str]) -> State:
    del texts
    return {}


@dataclasses.dataclass(frozen=True)
class SentenceTransformerEmbedder(PretrainedEmbedder):
  """A sentence-transformers model loaded from a local directory (needs the `[embed]` extra)."""
  path: str
  dim: int = 0  # taken from the model when 0
  batch_size: int = 64

  def _model(self):
    try:
      import sentence_transformers  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("The sentence_transformers embedder needs the [embed] extra: "
                        "pip install -e '.[embed]'.") from e
    return sentence_transformers.SentenceTransformer(self.path, device="cpu")

  def embed(self, texts: Sequence[str], state: State) -> np.ndarray:
    del state
    emb_ND = self._model().encode(list(texts), batch_size=self.batch_size,
                                  normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb_ND, np.float32).reshape(len(texts), -1)


# (tokens_BT int32, mask_BT bool) -> hidden_BTD: the hidden states of a language model.
HiddenFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class MeanPooledLMEmbedder(PretrainedEmbedder):
  """Mean of a language model's hidden states over each document's first `max_tokens` tokens.

  As in the public ICLM code (Contriever over the first 510 tokens). `hidden_fn` is called on
  batches padded to a multiple of 128 tokens; tokens come from the project byte vocabulary.
  """
  hidden_fn: HiddenFn
  max_tokens: int = 510
  batch_size: int = 32
  dim: int = 0

  def embed(self, texts: Sequence[str], state: State) -> np.ndarray:
    del state
    return np.concatenate([self._embed_batch(b) for b in _batches(texts, self.batch_size)]
                          or [np.zeros((0, self.dim), np.float32)])

  def _embed_batch(self, texts: Sequence[str]) -> np.ndarray:
    # A cost guard, not a cycle: vocab pulls in TensorFlow, which the hashed default never needs.
    from mixjax import vocab  # pylint: disable=g-import-not-at-top
    ids = [vocab.get_vocabulary().encode(t)[:self.max_tokens] for t in texts]
    width = -(-max(1, *map(len, ids)) // 128) * 128
    tokens_BT = np.zeros((len(ids), width), np.int32)
    for b, row in enumerate(ids):
      tokens_BT[b, :len(row)] = row
    mask_BT = tokens_BT != 0
    hidden_BTD = np.asarray(self.hidden_fn(tokens_BT, mask_BT), np.float32)
    summed_BD = np.einsum("btd,bt->bd", hidden_BTD, mask_BT.astype(np.float32))
    return _normalise(summed_BD / np.maximum(mask_BT.sum(1, keepdims=True), 1))

