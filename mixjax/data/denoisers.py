"""UL2's mixture of denoisers (Tay et al., 2022, Section 3.1.2) as one SeqIO preprocessor.

Each document (`features["targets"]`, already tokenized) is cut into consecutive chunks; every chunk
draws a denoiser by its rate, is as long as that denoiser's raw length (the last chunk of a document
may be shorter) and becomes one `{"inputs", "targets"}` example:

* span corruption (R and X denoisers), as T5's `span_corruption`: `round(n * corruption_rate)` noise
  tokens in about `noise / mean_span_length` spans, spans placed uniformly at random with non-noise
  first; inputs keep the non-noise tokens and put sentinel i where noise span i was, targets are
  sentinel i followed by noise span i, for each span. Sentinels count down from the top of the
  vocabulary (`vocab.sentinel_id`); a chunk that would need more spans than there are sentinels gets
  `vocab.max_sentinels()` longer spans instead. Unlike T5, the span count is rounded at random
  (up with probability equal to the fraction), so the mean span length is right on average: T5's
  rounding turns X3's 90 noise tokens of a 512-token example into one span of 90, not 64.
* prefix LM (the S denoiser): one split point, uniform over the chunk; inputs are the prefix,
  targets the rest.

With mode tokens on, inputs start with the denoiser's `[NLU]`/`[NLG]`/`[S2S]` id.

Chunks never cross documents, so no example mixes two documents and no token is dropped. The raw
length of a denoiser is the longest chunk whose example fits the budget that `sequence_length`
gives, counting the mode token and the EOS that `append_eos_after_trim` adds later (features with
`add_eos`), the way T5's `random_spans_helper` does, so packing never truncates:

* encoder-decoder (`sequence_length` has "inputs" and "targets"): inputs <= inputs length and
  targets <= targets length;
* decoder-only (only "targets", length L): inputs + targets <= L, as a prefix LM packs them.

The raw length is the largest n such that every chunk of length <= n fits; span corruption lengths
are deterministic functions of n, and for the S denoiser the worst split (prefix or suffix of n - 1
tokens) must fit, so in decoder-only mode its raw length is L minus the extras and in
encoder-decoder mode it is about min(inputs, targets). Example (512/512, mode tokens and EOS):
R1 568, R2 536, X1 510, X2 520, X3 597, X4 1004... see `raw_lengths()`.

Randomness is stateless (`seqio.map_over_dataset(num_seeds=...)`, `tf.random.stateless_*`): the same
SeqIO seed gives the same examples on any number of hosts. Work is vectorised over batches of
documents: one set of TF ops cuts, routes and corrupts a whole batch.
"""

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from mixjax.data import vocab


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
      raise ValueError(f"Denoiser {self.name!r}: rate must be a finite number >= 0, got {self.rate}.")
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

  def span_counts(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise tokens, expected noise spans and most noise spans in chunks of n >= 1 tokens.

    As T5's `random_spans_noise_mask`, noise is rounded (half to even) and there is at least one
    noise and one non-noise token when n >= 2 (a 1-token chunk is all noise). The span count is
    `clip(floor(expected + uniform), 1, most)`: at least one, at most ceil(expected), the
    non-noise tokens (spans alternate) and the number of sentinels.
    """
    n = np.asarray(n, np.int64)
    noise = np.clip(np.rint(n * float(self.corruption_rate)).astype(np.int64), 1,
                    np.maximum(n - 1, 1))
    expected = noise / float(self.mean_span_length)
    most = np.clip(np.ceil(expected).astype(np.int64), 1,
                   np.minimum(np.maximum(n - noise, 1), vocab.max_sentinels()))
    return noise, expected, most

  def max_lengths(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longest inputs, targets and inputs + targets a chunk of n tokens can give, without extras."""
    n = np.asarray(n, np.int64)
    if self.prefix_lm:
      # The split point is uniform in [min(1, n - 1), n - 1]: either side may get n - 1 tokens.
      return n - 1, np.maximum(n - 1, 1), n
    noise, _, spans = self.span_counts(n)
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

  @classmethod
  def from_sequence_length(cls, sequence_length: Mapping[str, int],
                           output_features: Mapping[str, seqio.Feature],
                           use_mode_tokens: bool) -> "LengthBudget":
    """Reads the budget off SeqIO's `sequence_length` (see the module docstring)."""
    if not sequence_length or sequence_length.get("targets") is None:
      raise ValueError(f"ul2_denoise needs sequence_length['targets'] (decoder-only) or both "
                       f"'inputs' and 'targets' (encoder-decoder); got {sequence_length}.")
    targets_feature = output_features["targets"]
    inputs_extra = int(output_features.get("inputs", targets_feature).add_eos) + int(use_mode_tokens)
    targets_extra = int(targets_feature.add_eos)
    if sequence_length.get("inputs") is None:
      return cls(total=sequence_length["targets"] - inputs_extra - targets_extra)
    return cls(inputs=sequence_length["inputs"] - inputs_extra,
               targets=sequence_length["targets"] - targets_extra)

  def longest_chunk(self, denoiser: Denoiser) -> int:
    """Largest n such that every chunk of 1..n tokens fits; 0 if none does."""
    upper = self.total if self.total is not None else self.inputs + self.targets
    n = np.arange(1, max(upper, 0) + 2)
    inputs, targets, total = denoiser.max_lengths(n)
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

  @property
  def shortest_chunk(self) -> int:
    return int(self.raw_length[np.isfinite(self.log_rates)].min())


def _tables(denoisers: Sequence[Denoiser], budget: LengthBudget) -> _Tables:
  """Checks the mixture against the budget and precomputes everything that depends only on n."""
  if not denoisers or sum(d.rate for d in denoisers) <= 0:
    raise ValueError(f"ul2_denoise needs at least one denoiser with rate > 0; got {denoisers}.")
  raw = np.array([budget.longest_chunk(d) for d in denoisers], np.int32)
  for d, r in zip(denoisers, raw):
    if d.rate > 0 and r < 1:
      raise ValueError(f"Denoiser {d.name!r} cannot fit even one token in {budget}; "
                       "use longer sequence lengths.")
  n = np.arange(raw.max() + 1)
  counts = [(np.zeros_like(n),) * 3 if d.prefix_lm else d.span_counts(np.maximum(n, 1))
            for d in denoisers]
  with np.errstate(divide="ignore"):
    log_rates = np.log(np.array([d.rate for d in denoisers], np.float32))
  return _Tables(
      log_rates=log_rates,
      raw_length=raw,
      prefix_lm=np.array([d.prefix_lm for d in denoisers]),
      mode_id=np.array([vocab.mode_token_id(d.mode_token) for d in denoisers], np.int32),
      noise=np.stack([c[0] for c in counts]).astype(np.int32),
      expected_spans=np.stack([c[1] for c in counts]).astype(np.float64),
      most_spans=np.stack([c[2] for c in counts]).astype(np.int32))


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
  candidate_doc = tf.repeat(tf.range(tf.size(doc_lengths)), most_chunks)
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

  Choosing pieces is choosing where they start: each row's first item, plus parts - 1 other items
  picked without replacement. All rows are done at once: items sort by (row, random key), which
  keeps rows in place, so an item's rank inside its row is its position there after sorting.

  Args:
    totals: [R] int32 >= 0.
    parts: [R] int32, 1 <= parts <= max(totals, 1); a zero total gives one empty piece.
    seed: [2] stateless seed.

  Returns:
    [sum(parts)] int32 piece lengths, row after row; each row's pieces sum to its total.
  """
  item_row = tf.repeat(tf.range(tf.size(totals)), totals)
  row_first_item = tf.gather(tf.cumsum(totals, exclusive=True), item_row)
  rank = tf.range(tf.size(item_row)) - row_first_item
  noise = tf.random.stateless_uniform(tf.shape(item_row), seed, dtype=tf.float64)
  keys = tf.cast(item_row, tf.float64) + tf.where(rank == 0, tf.zeros_like(noise), 0.5 + 0.5 * noise)
  order = tf.argsort(keys)
  starts_sorted = tf.cast(rank < tf.gather(parts, item_row), tf.int32)
  is_start = tf.scatter_nd(order[:, None], starts_sorted, tf.shape(order))
  starts_so_far = tf.cumsum(is_start)
  piece_in_row = starts_so_far - tf.gather(starts_so_far, row_first_item)
  piece = tf.gather(tf.cumsum(parts, exclusive=True), item_row) + piece_in_row
  num_pieces = tf.reduce_sum(parts)
  return tf.math.bincount(piece, minlength=num_pieces, maxlength=num_pieces, dtype=tf.int32)


def _span_layout(chunk_lengths, chunk_denoiser, tables: _Tables, seeds):
  """Lengths of each chunk's alternating non-noise / noise spans.

  A prefix-LM chunk is one non-noise span (its prefix, the inputs) and one noise span (the rest).

  Returns:
    (spans [C] int32: noise spans per chunk, span_lengths [2 * sum(spans)] int32 interleaved as
    non-noise 0, noise 0, non-noise 1, ... chunk after chunk).
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
  return spans, tf.reshape(tf.stack([nonnoise_pieces, noise_pieces], 1), [-1])


def _gather_slots(slots, chunk_of_token, num_chunks) -> tf.RaggedTensor:
  """Emits, token by token, each (value, present) slot in order; one ragged row per chunk."""
  values = tf.reshape(tf.stack([v for v, _ in slots], 1), [-1])
  present = tf.stack([p for _, p in slots], 1)
  row_lengths = tf.math.unsorted_segment_sum(
      tf.reduce_sum(tf.cast(present, tf.int32), 1), chunk_of_token, num_chunks)
  return tf.RaggedTensor.from_row_lengths(
      tf.boolean_mask(values, tf.reshape(present, [-1])), row_lengths, validate=False)


def _denoise_batch(tokens: tf.RaggedTensor, seeds, tables: _Tables, use_mode_tokens: bool):
  """Turns a batch of documents [B, (length)] into examples, one per chunk."""
  flat = tokens.flat_values
  chunk_lengths, chunk_denoiser = _split_documents(
      tf.cast(tokens.row_lengths(), tf.int32), tables, seeds[0])
  spans, span_lengths = _span_layout(chunk_lengths, chunk_denoiser, tables, seeds[1:])
  num_chunks = tf.size(chunk_lengths)
  chunk_of_token = tf.repeat(tf.range(num_chunks), chunk_lengths)
  span_of_token = tf.repeat(tf.range(tf.size(span_lengths)), span_lengths)
  is_noise = span_of_token % 2 == 1
  starts_span = tf.concat([[True], span_of_token[1:] != span_of_token[:-1]], 0)
  starts_chunk = tf.concat([[True], chunk_of_token[1:] != chunk_of_token[:-1]], 0)
  span_index = span_of_token // 2 - tf.gather(tf.cumsum(spans, exclusive=True), chunk_of_token)
  sentinel = tf.cast(vocab.sentinel_id(0) - span_index, flat.dtype)
  denoiser_of_token = tf.gather(chunk_denoiser, chunk_of_token)
  has_sentinel = is_noise & starts_span & ~tf.gather(tables.prefix_lm, denoiser_of_token)
  mode = tf.cast(tf.gather(tables.mode_id, denoiser_of_token), flat.dtype)
  inputs = _gather_slots([(mode, starts_chunk & use_mode_tokens), (sentinel, has_sentinel),
                          (flat, ~is_noise)], chunk_of_token, num_chunks)
  targets = _gather_slots([(sentinel, has_sentinel), (flat, is_noise)], chunk_of_token, num_chunks)
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
    output_features: the task's features; "targets" must use `vocab.get_vocabulary()`'s layout.
    denoisers: the mixture; routing probability of each is rate / sum(rates).
    use_mode_tokens: prepend each denoiser's mode token to its inputs.
    documents_per_batch: documents denoised by one vectorised step (a speed knob only; changing
      it changes which random numbers each chunk gets).
    denoiser_key: if set, also emit the index into `denoisers` of each example's denoiser (int32
      scalar) under this key, e.g. for per-denoiser metrics.

  Returns:
    A dataset of `{"inputs": int [n], "targets": int [m]}` (+ `denoiser_key`).
  """
  vocab_size = output_features["targets"].vocabulary.vocab_size
  if vocab_size != vocab.get_vocabulary().vocab_size:
    raise ValueError(f"ul2_denoise puts mode tokens and sentinels at mixjax.data.vocab ids, but the "
                     f"task's targets vocabulary has {vocab_size} ids, not "
                     f"{vocab.get_vocabulary().vocab_size}.")
  tables = _tables(denoisers, LengthBudget.from_sequence_length(
      sequence_length, output_features, use_mode_tokens))

  @seqio.map_over_dataset(num_seeds=3)
  def denoise(batch, seeds):
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
