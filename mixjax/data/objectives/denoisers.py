"""UL2's mixture of denoisers (Tay et al., 2022, Section 3.1.2) as one SeqIO preprocessor.

Each document (`features["targets"]`, already tokenized) is cut into consecutive chunks; every chunk
draws a denoiser by its rate, is as long as that denoiser's raw length (the last chunk of a document
may be shorter) and becomes one `{"inputs", "targets"}` example:

* span corruption (R and X denoisers), as T5's `span_corruption`: `round(n * corruption_rate)` noise
  tokens in about `noise / mean_span_length` spans, spans placed uniformly at random with non-noise
  first; inputs keep the non-noise tokens and put sentinel i where noise span i was, targets are
  sentinel i followed by noise span i, for each span. Sentinels count down from the top of the
  vocabulary (`vocab.sentinel_id`, any vocabulary with extra ids); a chunk that would need more
  spans than there are sentinels gets `vocab.max_sentinels()` longer spans instead. Unlike T5, the span count is rounded at random
  (up with probability equal to the fraction), so the mean span length is right on average: T5's
  rounding turns X3's 90 noise tokens of a 512-token example into one span of 90, not 64.
* prefix LM (the S denoiser): one split point, uniform over the chunk; inputs are the prefix,
  targets the rest.

With mode tokens on, inputs start with the denoiser's `[NLU]`/`[NLG]`/`[S2S]` id.

Chunks never cross documents, so no example mixes two documents and no token is dropped. A
denoiser's raw length is the longest chunk whose example surely fits the budget `sequence_length`
gives, counting the mode token and the EOS that `append_eos_after_trim` adds later (features with
`add_eos`), as T5's `random_spans_helper` does, so packing never truncates:

* encoder-decoder (`sequence_length` has "inputs" and "targets"): inputs <= inputs length and
  targets <= targets length;
* decoder-only (only "targets", length L): inputs + targets <= L, as a prefix LM packs them.

It is the largest n such that every chunk of <= n tokens fits in the worst case: for span
corruption, inputs = n - noise + spans and targets = noise + spans with the span count rounded up;
for the S denoiser a split leaving n - 1 tokens on either side, so its raw length is L minus the
extras (decoder-only) or about min(inputs, targets) (encoder-decoder). `raw_lengths()` lists them;
with mode tokens and EOS, 512/512 gives R1 566, R2 587, X1 764, X2 907, X3 598, X4 1004, S 511, and
decoder-only 1024 gives R1 927, R2 983, X1 765, X2 907, X3 1015, X4 1005, S 1021.

Randomness is stateless (`seqio.map_over_dataset(num_seeds=...)`, `tf.random.stateless_*`): the same
SeqIO seed gives the same examples on any number of hosts; inside a virtual data shard's pipeline
the shard index is folded into the seeds (`mixjax.data.shard_scope`). Work is vectorised over batches of
documents: one set of TF ops cuts, routes and corrupts a whole batch.
"""

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from mixjax import vocab
from mixjax.data import shard_scope


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Denoiser:
  """One denoiser of the mixture.

  Attributes:
    name: label used in errors and reports (e.g. "R1").
    rate: relative sampling weight (>= 0); chunks are routed with probability rate / sum(rates).
    mode_token: UL2 paradigm token prepended to inputs: one of `vocab.MODE_TOKENS`.
    mean_span_length: mean noise span length in tokens (span corruption only, >= 1).
    corruption_rate: fraction of tokens corrupted, in (0, 1) (span corruption only).
    prefix_lm: if True this is the S denoiser (one split point) and the two fields above stay None.
  """
  name: str
  rate: float
  mode_token: str
  mean_span_length: Optional[float] = None
  corruption_rate: Optional[float] = None
  prefix_lm: bool = False

  def __post_init__(self):
    if not (self.rate >= 0 and math.isfinite(self.rate)):
      raise ValueError(f"Denoiser {self.name!r}: rate must be a finite number >= 0, "
                       f"got {self.rate}.")
    if self.mode_token not in vocab.MODE_TOKENS:
      raise ValueError(f"Denoiser {self.name!r}: unknown mode token {self.mode_token!r}; "
                       f"valid: {', '.join(vocab.MODE_TOKENS)}.")
    if self.prefix_lm:
      if self.mean_span_length is not None or self.corruption_rate is not None:
        raise ValueError(f"Denoiser {self.name!r}: a prefix-LM denoiser takes no mean_span_length "
                         "or corruption_rate.")
      return
    if self.corruption_rate is None or not 0 < self.corruption_rate < 1:
      raise ValueError(f"Denoiser {self.name!r}: corruption_rate must be in (0, 1), "
                       f"got {self.corruption_rate}.")
    if self.mean_span_length is None or not self.mean_span_length >= 1:
      raise ValueError(f"Denoiser {self.name!r}: mean_span_length must be >= 1, "
                       f"got {self.mean_span_length}.")

  def span_counts(self, n: np.ndarray, max_sentinels: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise tokens, expected noise spans and most noise spans in chunks of n >= 1 tokens.

    As T5's `random_spans_noise_mask`, noise is rounded (half to even) and there is at least one
    noise and one non-noise token when n >= 2 (a 1-token chunk is all noise). The span count is
    `clip(floor(expected + uniform), 1, most)`: at least one, at most ceil(expected), the
    non-noise tokens (spans alternate) and the number of sentinels (`max_sentinels`, default:
    the byte vocabulary's).
    """
    n = np.asarray(n, np.int64)
    noise = np.clip(np.rint(n * float(self.corruption_rate)).astype(np.int64), 1,
                    np.maximum(n - 1, 1))
    expected = noise / float(self.mean_span_length)
    most = np.clip(np.ceil(expected).astype(np.int64), 1,
                   np.minimum(np.maximum(n - noise, 1),
                              max_sentinels or vocab.max_sentinels()))
    return noise, expected, most

  def max_lengths(self, n: np.ndarray, max_sentinels: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longest inputs, targets and inputs + targets a chunk of n tokens can give, without extras."""
    n = np.asarray(n, np.int64)
    if self.prefix_lm:
      # The split point is uniform in [min(1, n - 1), n - 1]: either side may get n - 1 tokens.
      return n - 1, np.maximum(n - 1, 1), n
    noise, _, spans = self.span_counts(n, max_sentinels)
    inputs, targets = n - noise + spans, noise + spans
    return inputs, targets, inputs + targets


DEFAULT_DENOISERS = (
    Denoiser("R1", rate=0.2, mode_token="[NLU]", mean_span_length=3, corruption_rate=0.15),
    Denoiser("R2", rate=0.2, mode_token="[NLU]", mean_span_length=8, corruption_rate=0.15),
    Denoiser("X1", rate=0.1, mode_token="[NLG]", mean_span_length=3, corruption_rate=0.5),
    Denoiser("X2", rate=0.1, mode_token="[NLG]", mean_span_length=8, corruption_rate=0.5),
    Denoiser("X3", rate=0.1, mode_token="[NLG]", mean_span_length=64, corruption_rate=0.15),
    Denoiser("X4", rate=0.1, mode_token="[NLG]", mean_span_length=64, corruption_rate=0.5),
    Denoiser("S", rate=0.2, mode_token="[S2S]", prefix_lm=True),
)
"""UL2's seven denoisers: R 40% / X 40% / S 20%, split evenly inside each group."""


@dataclasses.dataclass(frozen=True)
class LengthBudget:
  """Most tokens a denoiser may emit, extras (mode token, EOS) already taken off.

  Encoder-decoder budgets set `inputs` and `targets`; decoder-only budgets set `total`.
  """
  inputs: Optional[int] = None
  targets: Optional[int] = None
  total: Optional[int] = None
  max_sentinels: Optional[int] = None  # the vocabulary's; None: the byte vocabulary's

  @classmethod
  def from_sequence_length(cls, sequence_length: Mapping[str, int],
                           output_features: Mapping[str, seqio.Feature],
                           use_mode_tokens: bool) -> "LengthBudget":
    """Reads the budget off SeqIO's `sequence_length` (see the module docstring)."""
    if not sequence_length or sequence_length.get("targets") is None:
      raise ValueError(f"ul2_denoise needs sequence_length['targets'] (decoder-only) or both "
                       f"'inputs' and 'targets' (encoder-decoder); got {sequence_length}.")
    targets_feature = output_features["targets"]
    inputs_feature = output_features.get("inputs", targets_feature)
    inputs_extra = int(inputs_feature.add_eos) + int(use_mode_tokens)
    targets_extra = int(targets_feature.add_eos)
    sentinels = vocab.max_sentinels(targets_feature.vocabulary)
    if sequence_length.get("inputs") is None:
      return cls(total=sequence_length["targets"] - inputs_extra - targets_extra,
                 max_sentinels=sentinels)
    return cls(inputs=sequence_length["inputs"] - inputs_extra,
               targets=sequence_length["targets"] - targets_extra, max_sentinels=sentinels)

  def longest_chunk(self, denoiser: Denoiser) -> int:
    """Largest n such that every chunk of 1..n tokens fits; 0 if none does."""
    upper = self.total if self.total is not None else self.inputs + self.targets
    n = np.arange(1, max(upper, 0) + 2)
    inputs, targets, total = denoiser.max_lengths(n, self.max_sentinels)
    if self.total is not None:
      fits = total <= self.total
    else:
      fits = (inputs <= self.inputs) & (targets <= self.targets)
    return int(np.argmin(fits)) if not fits.all() else len(n)


def raw_lengths(denoisers: Sequence[Denoiser], sequence_length: Mapping[str, int],
                output_features: Mapping[str, seqio.Feature],
                use_mode_tokens: bool = True) -> dict[str, int]:
  """Chunk length each denoiser cuts documents into, by name."""
  budget = LengthBudget.from_sequence_length(sequence_length, output_features, use_mode_tokens)
  return {d.name: budget.longest_chunk(d) for d in denoisers}


@dataclasses.dataclass(frozen=True)
class _Tables:
  """Per-denoiser constants the TF code gathers from, indexed [denoiser] or [denoiser, n]."""
  log_rates: np.ndarray  # [D] float32, -inf for rate 0
  raw_length: np.ndarray  # [D] int32
  prefix_lm: np.ndarray  # [D] bool
  mode_id: np.ndarray  # [D] int32
  noise: np.ndarray  # [D, max_raw + 1] int32 (0 for prefix LM)
  expected_spans: np.ndarray  # [D, max_raw + 1] float64
  most_spans: np.ndarray  # [D, max_raw + 1] int32
  first_sentinel: int     # sentinel 0's id (the top of the vocabulary)

  @property
  def shortest_chunk(self) -> int:
    return int(self.raw_length[np.isfinite(self.log_rates)].min())


def _tables(denoisers: Sequence[Denoiser], budget: LengthBudget,
            vocabulary: seqio.Vocabulary) -> _Tables:
  """Checks the mixture against the budget and precomputes everything that depends only on n."""
  if not denoisers or sum(d.rate for d in denoisers) <= 0:
    raise ValueError(f"ul2_denoise needs at least one denoiser with rate > 0; got {denoisers}.")
  raw = np.array([budget.longest_chunk(d) for d in denoisers], np.int32)
  for d, r in zip(denoisers, raw):
    if d.rate > 0 and r < 1:
      raise ValueError(f"Denoiser {d.name!r} cannot fit even one token in {budget}; "
                       "use longer sequence lengths.")
  n = np.arange(raw.max() + 1)
  counts = [(np.zeros_like(n),) * 3 if d.prefix_lm else d.span_counts(np.maximum(n, 1), budget.max_sentinels)
            for d in denoisers]
  with np.errstate(divide="ignore"):
    log_rates = np.log(np.array([d.rate for d in denoisers], np.float32))
  return _Tables(
      log_rates=log_rates,
      raw_length=raw,
      prefix_lm=np.array([d.prefix_lm for d in denoisers]),
      mode_id=np.array([vocab.mode_token_id(d.mode_token, vocabulary) for d in denoisers],
                       np.int32),
      noise=np.stack([c[0] for c in counts]).astype(np.int32),
      expected_spans=np.stack([c[1] for c in counts]).astype(np.float64),
      most_spans=np.stack([c[2] for c in counts]).astype(np.int32),
      first_sentinel=vocab.sentinel_id(0, vocabulary))


def _segment_ids(lengths: tf.Tensor) -> tf.Tensor:
  """`tf.repeat(tf.range(n), lengths)`, without its [n, max(lengths)] intermediate."""
  total = tf.reduce_sum(lengths)
  starts = tf.math.bincount(tf.cumsum(lengths, exclusive=True), minlength=total, maxlength=total)
  return tf.cumsum(starts) - 1  # zero-length rows start where the next row starts: skipped


def _split_documents(doc_lengths: tf.Tensor, tables: _Tables, seed: tf.Tensor):
  """Cuts documents into consecutive chunks and routes each chunk to a denoiser.

  Every document gets as many candidate chunks as it could need (one at least), each with a
  denoiser drawn i.i.d. by rate; a candidate is kept if it starts inside its document. So kept
  chunks are routed i.i.d. too, they tile each document exactly and empty documents get none.

  Args:
    doc_lengths: [B] int32 >= 0.
    tables: the mixture's constants.
    seed: [2] stateless seed.

  Returns:
    (chunk_lengths [C] int32, chunk_denoiser [C] int32), chunks in document order.
  """
  most_chunks = tf.maximum((doc_lengths + tables.shortest_chunk - 1) // tables.shortest_chunk, 1)
  candidate_doc = _segment_ids(most_chunks)
  denoiser = tf.cast(tf.random.stateless_categorical(
      tables.log_rates[None], tf.size(candidate_doc), seed)[0], tf.int32)
  raw = tf.gather(tables.raw_length, denoiser)
  start = tf.cumsum(raw, exclusive=True)
  # Restart the running offset at each document's first candidate.
  start -= tf.gather(tf.gather(start, tf.cumsum(most_chunks, exclusive=True)), candidate_doc)
  room = tf.gather(doc_lengths, candidate_doc) - start
  keep = room > 0
  return tf.boolean_mask(tf.minimum(raw, room), keep), tf.boolean_mask(denoiser, keep)


def _random_composition(totals: tf.Tensor, parts: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Splits each total into `parts` pieces, uniformly over all compositions.

  Choosing pieces is choosing where they start: each row's first item, plus the parts - 1 other
  items with the smallest random keys. All rows are done with one sort on row + key (key in
  [1/4, 3/4), 0 for the first item), which keeps rows apart and in place: after sorting, an item's
  rank inside its row is its offset from the row's first position.

  Args:
    totals: [R] int32 >= 0.
    parts: [R] int32, 1 <= parts <= max(totals, 1); a zero total gives one empty piece.
    seed: [2] stateless seed.

  Returns:
    [sum(parts)] int32 piece lengths, row after row; each row's pieces sum to its total.
  """
  item_row = _segment_ids(totals)
  row_first_item = tf.gather(tf.cumsum(totals, exclusive=True), item_row)
  rank = tf.range(tf.size(item_row)) - row_first_item
  uniform = tf.random.stateless_uniform(tf.shape(item_row), seed, dtype=tf.float64)
  keys = tf.cast(item_row, tf.float64) + tf.where(rank == 0, tf.zeros_like(uniform),
                                                  0.25 + 0.5 * uniform)
  order = tf.argsort(keys)
  starts_sorted = tf.cast(rank < tf.gather(parts, item_row), tf.int32)
  is_start = tf.scatter_nd(order[:, None], starts_sorted, tf.shape(order))
  starts_so_far = tf.cumsum(is_start)
  piece_in_row = starts_so_far - tf.gather(starts_so_far, row_first_item)
  piece = tf.gather(tf.cumsum(parts, exclusive=True), item_row) + piece_in_row
  num_pieces = tf.reduce_sum(parts)
  return tf.math.bincount(piece, minlength=num_pieces, maxlength=num_pieces, dtype=tf.int32)


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How a batch's chunks split into spans; per chunk [C] unless said otherwise."""
  lengths: tf.Tensor  # tokens
  denoiser: tf.Tensor
  noise: tf.Tensor  # tokens going to targets
  spans: tf.Tensor  # noise spans
  span_lengths: tf.Tensor  # [2 * sum(spans)]: non-noise 0, noise 0, non-noise 1, ... chunk by chunk


def _span_layout(chunk_lengths, chunk_denoiser, tables: _Tables, seeds) -> _Layout:
  """Draws each chunk's span counts and span lengths.

  A prefix-LM chunk is one non-noise span (its prefix, the inputs) and one noise span (the rest).
  """
  index = chunk_denoiser * tables.noise.shape[1] + chunk_lengths
  by_length = lambda table: tf.gather(table.reshape(-1), index)
  uniform = tf.random.stateless_uniform(tf.shape(chunk_lengths), seeds[0], dtype=tf.float64)
  spans = tf.clip_by_value(tf.cast(tf.floor(by_length(tables.expected_spans) + uniform), tf.int32),
                           1, by_length(tables.most_spans))
  # A prefix-LM chunk has no spans to round: its one uniform draw picks the split point instead,
  # uniform in [min(1, n - 1), n - 1].
  lowest = tf.minimum(1, chunk_lengths - 1)
  split = lowest + tf.cast(uniform * tf.cast(chunk_lengths - lowest, tf.float64), tf.int32)
  prefix_lm = tf.gather(tables.prefix_lm, chunk_denoiser)
  noise = tf.where(prefix_lm, chunk_lengths - split, by_length(tables.noise))
  spans = tf.where(prefix_lm, 1, spans)
  pieces = _random_composition(tf.concat([chunk_lengths - noise, noise], 0),
                               tf.concat([spans, spans], 0), seeds[1])
  nonnoise_pieces, noise_pieces = tf.split(pieces, 2)
  return _Layout(chunk_lengths, chunk_denoiser, noise, spans,
                 tf.reshape(tf.stack([nonnoise_pieces, noise_pieces], 1), [-1]))


def _gather_slots(slots, row_lengths) -> tf.RaggedTensor:
  """Emits, token by token, each (value, present) slot in order, as rows of `row_lengths`."""
  values = tf.reshape(tf.stack([v for v, _ in slots], 1), [-1])
  present = tf.reshape(tf.stack([p for _, p in slots], 1), [-1])
  return tf.RaggedTensor.from_row_lengths(tf.boolean_mask(values, present), row_lengths,
                                          validate=False)


def _emit(tokens: tf.Tensor, layout: _Layout, tables: _Tables, use_mode_tokens: bool):
  """Inputs and targets of every chunk, as [C, (length)] ragged tensors.

  What a token emits depends only on its span, so the per-span values (small arrays) are worked
  out first and then gathered once per token.
  """
  num_spans = tf.size(layout.span_lengths)
  span_chunk = _segment_ids(2 * layout.spans)
  span_start = tf.cumsum(layout.span_lengths, exclusive=True)
  chunk_start = tf.cumsum(layout.lengths, exclusive=True)
  is_noise_span = tf.range(num_spans) % 2 == 1
  span_in_chunk = tf.range(num_spans) // 2 - tf.gather(tf.cumsum(layout.spans, exclusive=True),
                                                       span_chunk)
  prefix_lm = tf.gather(tables.prefix_lm, layout.denoiser)
  # 0 marks spans that emit no sentinel: non-noise spans and prefix-LM chunks.
  span_sentinel = tf.where(is_noise_span & ~tf.gather(prefix_lm, span_chunk),
                           tables.first_sentinel - span_in_chunk, 0)
  # The mode token goes before the chunk's first token, in whichever span that falls.
  opens_chunk = (span_start == tf.gather(chunk_start, span_chunk)) & (layout.span_lengths > 0)
  span_mode = tf.where(opens_chunk & use_mode_tokens,
                       tf.gather(tf.gather(tables.mode_id, layout.denoiser), span_chunk), 0)

  span_of_token = _segment_ids(layout.span_lengths)
  first_of_span = tf.concat([[True], span_of_token[1:] != span_of_token[:-1]], 0)
  is_noise = span_of_token % 2 == 1
  sentinel = tf.cast(tf.gather(span_sentinel, span_of_token), tokens.dtype)
  mode = tf.cast(tf.gather(span_mode, span_of_token), tokens.dtype)
  has_sentinel = first_of_span & (sentinel != 0)

  num_sentinels = tf.where(prefix_lm, 0, layout.spans)
  inputs = _gather_slots(
      [(mode, first_of_span & (mode != 0)), (sentinel, has_sentinel), (tokens, ~is_noise)],
      int(use_mode_tokens) + layout.lengths - layout.noise + num_sentinels)
  targets = _gather_slots([(sentinel, has_sentinel), (tokens, is_noise)],
                          layout.noise + num_sentinels)
  return inputs, targets


def _denoise_batch(tokens: tf.RaggedTensor, seeds, tables: _Tables, use_mode_tokens: bool):
  """Turns a batch of documents [B, (length)] into examples, one per chunk."""
  chunk_lengths, chunk_denoiser = _split_documents(
      tf.cast(tokens.row_lengths(), tf.int32), tables, seeds[0])
  layout = _span_layout(chunk_lengths, chunk_denoiser, tables, seeds[1:])
  inputs, targets = _emit(tokens.flat_values, layout, tables, use_mode_tokens)
  return inputs, targets, chunk_denoiser


@gin.configurable
def ul2_denoise(dataset: tf.data.Dataset,
                sequence_length: Mapping[str, int],
                output_features: Mapping[str, seqio.Feature],
                denoisers: Sequence[Denoiser] = DEFAULT_DENOISERS,
                use_mode_tokens: bool = True,
                documents_per_batch: int = 64,
                denoiser_key: Optional[str] = None) -> tf.data.Dataset:
  """SeqIO preprocessor: tokenized documents in "targets" -> UL2 `{"inputs", "targets"}` examples.

  Put it after tokenization and before `seqio.preprocessors.append_eos_after_trim` (its lengths
  leave room for that EOS). Features other than "targets" are dropped, as in T5's span corruption;
  empty documents give no example.

  Args:
    dataset: examples with a 1-D int "targets" feature.
    sequence_length: {"inputs", "targets"} lengths (encoder-decoder) or {"targets"} only
      (decoder-only: inputs + targets share it). See the module docstring.
    output_features: the task's features; their vocabulary's extra ids hold the mode tokens
      (lowest) and sentinels (top), see mixjax.vocab.
    denoisers: the mixture; routing probability of each is rate / sum(rates).
    use_mode_tokens: prepend each denoiser's mode token to its inputs.
    documents_per_batch: documents denoised by one vectorised step (a speed knob only; changing
      it changes which random numbers each chunk gets).
    denoiser_key: if set, also emit the index into `denoisers` of each example's denoiser (int32
      scalar) under this key, e.g. for per-denoiser metrics.

  Returns:
    A dataset of `{"inputs": int [n], "targets": int [m]}` (+ `denoiser_key`).
  """
  vocabulary = output_features["targets"].vocabulary
  if vocabulary.extra_ids <= len(vocab.MODE_TOKENS):
    raise ValueError(f"ul2_denoise puts mode tokens and sentinels in the vocabulary's extra ids, "
                     f"but it has {vocabulary.extra_ids}; use one with extra ids (e.g. "
                     "VocabConfig(kind='sentencepiece', extra_ids=100)).")
  tables = _tables(denoisers, LengthBudget.from_sequence_length(
      sequence_length, output_features, use_mode_tokens), vocabulary)

  shard = shard_scope.current()

  @seqio.map_over_dataset(num_seeds=3)
  def denoise(batch, seeds):
    if shard is not None:  # one trace serves every virtual shard: make their noise differ
      seeds = [tf.random.experimental.stateless_fold_in(seeds[i], shard) for i in range(3)]
    inputs, targets, denoiser = _denoise_batch(batch["targets"], seeds, tables, use_mode_tokens)
    out = {"inputs": inputs, "targets": targets}
    if denoiser_key:
      out[denoiser_key] = denoiser
    return out

  dataset = dataset.map(lambda x: {"targets": x["targets"]}, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = denoise(dataset.ragged_batch(documents_per_batch)).unbatch()
  # Unbatched ragged rows are typed as 0-ragged-rank RaggedTensorSpecs; make them plain tensors.
  return dataset.map(lambda x: {k: tf.identity(v) for k, v in x.items()},
                     num_parallel_calls=tf.data.AUTOTUNE)


def span_corruption(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                    output_features: Mapping[str, seqio.Feature], mean_span_length: float = 3.0,
                    corruption_rate: float = 0.15) -> tf.data.Dataset:
  """SeqIO preprocessor: T5's span corruption alone (R1 by default), no mode token."""
  denoiser = Denoiser("span_corruption", rate=1.0, mode_token="[NLU]",
                      mean_span_length=mean_span_length, corruption_rate=corruption_rate)
  return ul2_denoise(dataset, sequence_length, output_features, denoisers=(denoiser,),
                     use_mode_tokens=False)
