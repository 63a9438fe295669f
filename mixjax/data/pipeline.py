"""The one batch iterator: per-domain packed rows, mixed step by step by an exact row allocator.

Every run reads its data through `BatchIterator`. Each domain's task is packed on its own into
rows of the run's length (seeded shuffle, repeated forever). At each step an allocator (see
`mixjax.mixing`: a weight source times an exact per-step apportionment) says how many rows each
domain gives to the global batch; a seeded permutation (a pure function of seed, shard and step)
places them. Static rates are a constant schedule through the same allocator, so there is one
code path.

Virtual data shards: the global batch is `num_shards` equal shard batches, and shard v reads only
records `v mod num_shards` of every domain, shuffled, preprocessed and packed on its own
(`shard_rows`). Each step's counts are dealt to the shards (`allocation.split_over_shards`);
host h of H builds shards [h V/H, (h+1) V/H) and nothing else. The number of shards follows from
the batch size (`default_num_shards`), not from the host count, so every host count that divides
it reads the same global batches, each host a disjoint share of them.

State: the step, each domain's position (rows given) and each shard's, the allocators' carries and
the weight source's state, and tokens read: resuming continues the stream exactly, on any number
of hosts.
"""

import collections
import dataclasses
import math
import zlib
from typing import Any, Iterator, Mapping, Protocol, Sequence

import gin
import jax
from jax.experimental import multihost_utils
import numpy as np
import seqio
import tensorflow as tf

from mixjax import vocab as vocab_lib
from mixjax.data import features
from mixjax.data import objectives
from mixjax.data import shard_scope
from mixjax.data import tasks

STATE_KIND = "virtual_shards"  # the state layout's name
OLD_STATE_KINDS = ("scheduled_mixture",)  # layouts of earlier versions, whose streams differ
_CHUNK_ROWS = 64  # rows a shard's stream hands over at a time
_MAX_DEFAULT_SHARDS = 64
_MIN_ROWS_PER_SHARD = 4
_EXAMPLE_BUFFER = 1024  # examples shuffled after preprocessing, over all of a domain's shards


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  mixture_or_task_name: str = gin.REQUIRED
  task_feature_lengths: Mapping[str, int] = gin.REQUIRED
  batch_size: int = gin.REQUIRED   # global batch, in packed sequences
  feature_converter: str = "lm"    # lm | prefix_lm | enc_dec
  pack: bool = True
  objective: str = "lm"            # lm | ul2 (see mixjax.data.objectives)
  vocab: vocab_lib.VocabConfig = vocab_lib.VocabConfig()
  # A mixjax.mixing Schedule (gin: MIXTURE_SCHEDULE) of the mixture's domain rates over training;
  # None: the SeqIO mixture's own rates, as a constant schedule.
  schedule: Any = None

  def __post_init__(self):
    if isinstance(self.vocab, Mapping):  # from run_configs.json
      object.__setattr__(self, "vocab", vocab_lib.VocabConfig(**self.vocab))
    objectives.get(self.objective).check(self.feature_converter)

  @property
  def vocabulary(self) -> seqio.Vocabulary:
    return self.vocab.build()

  @property
  def row_length(self) -> int:
    """Tokens per packed decoder row (prefix-LM rows hold inputs + targets)."""
    lengths = self.task_feature_lengths
    return sum(lengths.values()) if self.feature_converter == "prefix_lm" else lengths["targets"]


def get_dataset(config: DataConfig, task_name: str, split: str, shuffle: bool,
                num_epochs: int | None, seed: int | None = None,
                shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  """One task's packed features under the config's objective, layout and vocabulary: the one
  place the pipeline calls SeqIO."""
  return seqio.get_dataset(
      tasks.seqio_task(task_name, config.objective, config.feature_converter, config.vocab),
      task_feature_lengths=dict(config.task_feature_lengths),
      feature_converter=features.feature_converter(config.feature_converter, config.pack),
      dataset_split=split, shuffle=shuffle, num_epochs=num_epochs, shard_info=shard_info,
      seed=seed, verbose=False, trim_output_features=config.feature_converter != "prefix_lm")


def tf_options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 2
  return ds.with_options(options)


def domain_seed(seed: int, task_name: str) -> int:
  """The shuffle seed of one domain's row stream: a pure function of (seed, task name)."""
  return int(np.random.SeedSequence([seed, zlib.crc32(task_name.encode())]).generate_state(1)[0]
             % (2**31 - 1))


_SLOT_STREAM = zlib.crc32(b"mixjax.allocation.slots")
_SHARD_SHUFFLE_STREAM = zlib.crc32(b"mixjax.pipeline.shard_shuffle")


def slot_key(seed: int, shard: int) -> int:
  """Key of the seeded permutation that places one shard's rows in its batch at each step."""
  return int(np.random.SeedSequence([seed, shard, _SLOT_STREAM]).generate_state(1)[0])


def place_rows(counts_D: np.ndarray, key: int, step: int) -> np.ndarray:
  """Domain index of each row slot `[R]`: a seeded permutation keyed by (key, step)."""
  ids_R = tf.repeat(tf.range(len(counts_D), dtype=tf.int64), tf.constant(counts_D, tf.int64))
  seed = tf.constant([key, step], tf.int64)
  return tf.random.experimental.stateless_shuffle(ids_R, seed=seed).numpy()


def default_num_shards(batch_size: int) -> int:
  """Virtual data shards when `MixingConfig.num_shards` is None: the largest power of two that
  divides the batch, leaves each shard at least 4 rows and is at most 64. It depends on the batch
  size only, so the stream is the same on every host count that divides it."""
  shards = 1
  while (shards * 2 <= _MAX_DEFAULT_SHARDS and batch_size % (shards * 2) == 0
         and batch_size // (shards * 2) >= _MIN_ROWS_PER_SHARD):
    shards *= 2
  return shards


def rows_per_shard(num_shards: int, hosts: int, batch_size: int) -> int:
  """Rows of each shard batch; raises unless shards split evenly over hosts and the batch."""
  if num_shards < 1 or num_shards % hosts or batch_size % num_shards:
    fits = [v for v in range(hosts, batch_size + 1, hosts) if batch_size % v == 0]
    fix = (f"set --gin.MixingConfig.num_shards to one of {fits[:6]}" if fits else
           f"use a batch size that {hosts} hosts can split")
    raise ValueError(f"{num_shards} virtual data shards (MixingConfig.num_shards; by default set "
                     f"from the batch size) must be a multiple of the host count ({hosts}) and "
                     f"divide batch_size={batch_size}: {fix} (every run sharing that value reads "
                     "the same batches).")
  return batch_size // num_shards


def shard_rows(config: DataConfig, task_name: str, split: str, shards: Sequence[int],
               num_shards: int, *, shuffle: bool, seed: int, skip_rows: Sequence[int] = (),
               num_epochs: int | None = None, max_rows: int | None = None) -> tf.data.Dataset:
  """Packed rows of virtual shards `shards` (of `num_shards`) of one task: chunks of up to 64 rows
  of one shard each (`"shard"` names it), the shards' chunks in turn.

  Shard v holds records v, v + V, ... of the split in the source's own order; shuffled, it comes
  in a seeded order of its own (a buffer of the task's `shuffle_buffer_size` / V records,
  reshuffled each epoch, then one of 1024 / V examples after preprocessing), and it is
  preprocessed (SeqIO's task preprocessors, UL2's noise folded with v) and packed by itself, so its rows never depend on which other shards a host builds.
  One function is traced for all of them: the cost of building does not grow with the shards.
  `skip_rows[i]`: rows of `shards[i]` already read (a resume); `max_rows`: rows kept per shard.
  """
  task = seqio.get_mixture_or_task(
      tasks.seqio_task(task_name, config.objective, config.feature_converter, config.vocab))
  lengths = dict(config.task_feature_lengths)
  converter = features.feature_converter(config.feature_converter, config.pack)
  preprocess_seed = domain_seed(seed, task_name)
  shuffle_seeds_V = tf.constant([int(np.random.SeedSequence(
      [preprocess_seed, v, _SHARD_SHUFFLE_STREAM]).generate_state(1)[0] % (2**31 - 1))
                                 for v in range(num_shards)], tf.int64)
  buffer = tasks.get(task_name).shuffle_buffer_size
  records = max(1, -(-buffer // num_shards))
  examples = max(1, -(-min(buffer, _EXAMPLE_BUFFER) // num_shards))

  @tf.autograph.experimental.do_not_convert  # plain Python control flow: tracing is cheaper
  def one_shard(shard, skip):
    ds = task.source.get_dataset(split=split, shuffle=False, seed=preprocess_seed)
    ds = ds.shard(num_shards, shard)
    if shuffle:
      ds = ds.shuffle(records, seed=tf.gather(shuffle_seeds_V, shard),
                      reshuffle_each_iteration=True)
    with shard_scope.building(shard):
      ds = task.preprocess_precache(ds, seed=preprocess_seed).repeat(num_epochs)
      ds = task.preprocess_postcache(ds, sequence_length=lengths, seed=preprocess_seed)
    if shuffle:  # spreads the pieces of a long document (split or denoised) over many rows
      ds = ds.shuffle(examples, seed=tf.gather(shuffle_seeds_V, shard) + 1)
    if config.feature_converter != "prefix_lm":
      ds = seqio.utils.trim_dataset(ds, lengths, task.output_features)
    ds = converter(ds, lengths).skip(skip)
    ds = (ds if max_rows is None else ds.take(max_rows)).batch(_CHUNK_ROWS)
    return ds.map(lambda chunk: {**chunk, "shard": shard})

  skips = list(skip_rows) or [0] * len(shards)
  starts = tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(shards), tf.int64), tf.constant(skips, tf.int64)))
  return tf_options(starts.interleave(one_shard, cycle_length=len(shards), block_length=1))


def eval_num_shards(rows: int, host_rows: slice) -> int:
  """Virtual shards of an eval batch of `rows` rows, this host holding rows `host_rows`:
  `default_num_shards(rows)`, raised to a multiple of the number of host blocks when they do not
  split it (then the eval rows differ from those of host counts that do)."""
  return math.lcm(default_num_shards(rows), rows // (host_rows.stop - host_rows.start))


def host_eval_batches(config: DataConfig, task_name: str, rows: int, num_batches: int,
                      host_rows: slice, split: str = "validation") -> list[dict[str, np.ndarray]]:
  """This host's rows (`host_rows`) of a task's fixed eval batches of `rows` rows each.

  Eval batch k holds the k-th `rows / V` packed rows of each of V virtual shards
  (`eval_num_shards`), unshuffled; shard v packs records v, v + V, ... of the split on its own
  (with UL2, seed 0's noise). A host reads only its own shards, so every host count that divides
  V evaluates the same rows. A shard that runs out gives all-zero rows (no loss weight); batches
  past the end of every shard, on every host, are left out. Call on every host.
  """
  num_shards = eval_num_shards(rows, host_rows)
  per_shard = rows // num_shards
  shards = range(host_rows.start // per_shard, host_rows.stop // per_shard)
  ds = shard_rows(config, task_name, split, shards, num_shards, shuffle=False, seed=0,
                  num_epochs=1, max_rows=per_shard * num_batches)
  chunks = {v: [] for v in shards}
  for chunk in ds.as_numpy_iterator():
    chunks[int(chunk.pop("shard"))].append(chunk)
  spec = {k: s for k, s in ds.element_spec.items() if k != "shard"}
  def shard_array(name, parts):
    width = spec[name].shape[1:]
    return np.concatenate([p[name] for p in parts] or
                          [np.zeros((0, *width), spec[name].dtype.as_numpy_dtype)])
  arrays = {v: {k: shard_array(k, parts) for k in spec} for v, parts in chunks.items()}
  local_rows = max(len(a["decoder_target_tokens"]) for a in arrays.values())
  used = int(_max_over_processes(np.asarray([-(-local_rows // per_shard)]))[0])
  batches = []
  for k in range(used):
    window = slice(k * per_shard, (k + 1) * per_shard)
    batches.append({name: np.concatenate([_zero_pad(a[name][window], per_shard)
                                          for a in arrays.values()]) for name in spec})
  return batches


def _zero_pad(x: np.ndarray, rows: int) -> np.ndarray:
  return np.pad(x, [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1))


class Allocator(Protocol):
  """Row counts per domain, step by step (implemented by `mixjax.mixing.allocation`)."""
  domains: tuple[str, ...]
  last_weights_D: np.ndarray
  num_shards: int             # virtual shards the global batch is dealt to
  shard_rows_VD: np.ndarray  # rows each virtual shard has given of each domain

  @property
  def step(self) -> int: ...
  @property
  def rows_D(self) -> tuple[int, ...]: ...
  def next(self) -> np.ndarray: ...  # counts [V, D] of each shard's part of the next batch
  def update(self, step: int, stats: Mapping[str, Any]) -> None: ...
  def state(self) -> dict: ...


class _ShardedRows:
  """One domain's rows for this host's shards (`shard_rows`), kept per shard until taken."""

  def __init__(self, dataset: tf.data.Dataset, shards: Sequence[int], task_name: str):
    self._iterator = dataset.prefetch(2).as_numpy_iterator()
    self._chunks = {v: collections.deque() for v in shards}  # [chunk, rows taken] per shard
    self._task = task_name

  def _pull(self, wanted: int):
    """Reads chunks until one of shard `wanted` arrives: within one round of the shards' turns
    (the interleave is round-robin), unless that shard's stream has ended."""
    for _ in range(len(self._chunks)):
      chunk = next(self._iterator, None)
      if chunk is None:
        break
      shard = int(chunk.pop("shard"))
      self._chunks[shard].append([chunk, 0])
      if shard == wanted:
        return
    raise ValueError(
        f"Task {self._task!r} ran out of rows in virtual data shard {wanted}: that shard of its "
        "split holds no documents (shard v reads documents v, v + V, ...). Give it more "
        "documents or use fewer shards (--gin.MixingConfig.num_shards).")

  def take(self, shard: int, n: int) -> list[dict[str, np.ndarray]]:
    pieces, queue = [], self._chunks[shard]
    while n > 0:
      if not queue:
        self._pull(shard)
        continue
      chunk, at = queue[0]
      size = len(next(iter(chunk.values())))
      k = min(n, size - at)
      pieces.append({f: v[at:at + k] for f, v in chunk.items()})
      n -= k
      queue[0][1] = at + k
      if at + k == size:
        queue.popleft()
    return pieces


def _sum_over_processes(x_D: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return x_D
  return np.asarray(multihost_utils.process_allgather(x_D)).sum(axis=0)


def _max_over_processes(x: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x)).max(axis=0)


@dataclasses.dataclass(frozen=True)
class _StepRecord:
  weights_D: np.ndarray       # the allocator's weights for this step
  realised_D: np.ndarray      # share of this host's rows
  rows_D: np.ndarray          # cumulative rows of the global batches
  local_tokens_D: np.ndarray  # cumulative target tokens this host read since (re)start
  fingerprint: int            # crc32 of this host's target tokens


class BatchIterator(Iterator[dict]):
  """This host's share of each global batch (numpy), `total_steps` batches in all."""

  _HISTORY = 8  # steps of accounting kept for `step_metrics` (the loop logs one step late)

  def __init__(self, config: DataConfig, seed: int, allocator: Allocator,
               domain_tasks: Mapping[str, str], total_steps: int,
               shard_info: seqio.ShardInfo | None = None,
               epoch_tokens: Mapping[str, int] | None = None,
               tokens: Mapping[str, int] | None = None, extra_state: Mapping | None = None):
    """`allocator` deals the global batch to its virtual shards; `domain_tasks` maps
    each of its domains to its task; `tokens` are the target tokens read before a resume;
    `extra_state` is saved with the iterator's own state."""
    shard_info = shard_info or seqio.ShardInfo(0, 1)
    hosts, num_shards = shard_info.num_shards, allocator.num_shards
    self.rows_per_shard = rows_per_shard(num_shards, hosts, config.batch_size)
    self._config, self._seed, self.allocator = config, seed, allocator
    self.domains = tuple(allocator.domains)
    self.tasks = dict(domain_tasks)
    self.num_shards, self.total_steps = num_shards, total_steps
    per_host = num_shards // hosts
    self._shards = range(shard_info.index * per_host, (shard_info.index + 1) * per_host)
    self._epoch_tokens = dict(epoch_tokens or {})
    self._extra_state = dict(extra_state or {})
    self._token_base_D = np.asarray([(tokens or {}).get(d, 0) for d in self.domains], np.int64)
    self._local_tokens_D = np.zeros(len(self.domains), np.int64)
    self._history: dict[int, _StepRecord] = {}
    self._start_rows_VD = np.array(allocator.shard_rows_VD)
    self._streams: dict[int, _ShardedRows] = {}  # domain -> this host's shards' rows, on use

  def _stream(self, d: int) -> _ShardedRows:
    if d not in self._streams:
      task = self.tasks[self.domains[d]]
      ds = shard_rows(self._config, task, "train", self._shards, self.num_shards, shuffle=True,
                      seed=self._seed, skip_rows=[int(self._start_rows_VD[v, d])
                                                  for v in self._shards])
      self._streams[d] = _ShardedRows(ds, self._shards, task)
    return self._streams[d]

  def _shard_batch(self, shard: int, counts_D: np.ndarray, step: int):
    ids_R = place_rows(counts_D, slot_key(self._seed, shard), step)
    pieces = {d: self._stream(d).take(shard, int(n)) for d, n in enumerate(counts_D) if n}
    batch = {}
    for d, parts in pieces.items():
      for name in parts[0]:
        if name not in batch:
          shape = (len(ids_R),) + parts[0][name].shape[1:]
          batch[name] = np.zeros(shape, parts[0][name].dtype)
        batch[name][ids_R == d] = np.concatenate([p[name] for p in parts])
    return batch, ids_R

  def __next__(self) -> dict[str, np.ndarray]:
    """The next host batch; StopIteration after `total_steps` batches."""
    step = self.allocator.step
    if step >= self.total_steps:
      raise StopIteration
    counts_VD = self.allocator.next()
    shards = [self._shard_batch(v, counts_VD[v], step) for v in self._shards]
    batch = {k: np.concatenate([b[k] for b, _ in shards]) for k in shards[0][0]}
    ids_R = np.concatenate([ids for _, ids in shards])
    targets = batch["decoder_target_tokens"]
    np.add.at(self._local_tokens_D, ids_R, np.count_nonzero(targets, axis=1))
    self._history[step + 1] = _StepRecord(
        self.allocator.last_weights_D,
        np.bincount(ids_R, minlength=len(self.domains)) / len(ids_R),
        np.asarray(self.allocator.rows_D), self._local_tokens_D.copy(),
        zlib.crc32(np.ascontiguousarray(targets).tobytes()))
    self._history.pop(step + 1 - self._HISTORY, None)
    return batch

  def update(self, step: int, stats: Mapping[str, Any]):
    """Passes per-domain training statistics to the weight source (e.g. DoReMi's excess loss)."""
    self.allocator.update(step, stats)

  def _tokens_D(self, local_tokens_D: np.ndarray) -> np.ndarray:
    """Target tokens read per domain by all hosts (sums over processes: call on every host)."""
    return self._token_base_D + _sum_over_processes(local_tokens_D)

  def step_metrics(self, step: int) -> dict[str, float]:
    """Accounting for the batch of train step `step` (one of the last few), for metrics.jsonl.

    Scheduled and realised weight (share of the batch's rows), and cumulative rows, target tokens
    and epochs (tokens / tokens per epoch, where the domain's size is known) per domain;
    `data/fingerprint` identifies the batch.
    """
    record = self._history.get(step)
    if record is None:
      return {}
    tokens_D = self._tokens_D(record.local_tokens_D)
    metrics = {"data/fingerprint": float(record.fingerprint)}
    for d, domain in enumerate(self.domains):
      metrics[f"mixture/{domain}/weight_scheduled"] = float(record.weights_D[d])
      metrics[f"mixture/{domain}/weight_realised"] = float(record.realised_D[d])
      metrics[f"mixture/{domain}/rows"] = float(record.rows_D[d])
      metrics[f"mixture/{domain}/tokens"] = float(tokens_D[d])
      if domain in self._epoch_tokens:
        metrics[f"mixture/{domain}/epochs"] = tokens_D[d] / self._epoch_tokens[domain]
    return metrics

  def state(self) -> dict:
    """JSON-able state: the allocator's (step, rows given and owed per domain in all and by each
    shard, weight source), global tokens (summed over processes: call on every host), and extras."""
    tokens_D = self._tokens_D(self._local_tokens_D)
    return {"kind": STATE_KIND, "seed": self._seed, "num_shards": self.num_shards,
            **self.allocator.state(), "tokens": {d: int(t) for d, t in zip(self.domains, tokens_D)},
            **self._extra_state}


def domain_tasks(mixture_or_task_name: str) -> dict[str, str]:
  """`{domain: task}` of a registered mixture or task, in registration order (one task each)."""
  names = tasks.task_names(mixture_or_task_name)
  by_domain = {}
  for name in names:
    by_domain.setdefault(tasks.domain_of(name), []).append(name)
  shared = {d: t for d, t in by_domain.items() if len(t) > 1}
  if shared:
    raise ValueError(f"Mixture {mixture_or_task_name!r} has several tasks per domain ({shared}); "
                     "a mixture needs one task per domain: give each task its own domain.")
  return {d: t[0] for d, t in by_domain.items()}


def prompt_rows(config: DataConfig, prompts: Sequence[Sequence[int]],
                continuations: Sequence[Sequence[int]], pad_to: int = 32,
                mode: str | None = None) -> dict[str, np.ndarray]:
  """Features scoring each continuation after its prompt, in the run's objective's prompt
  format and layout (what training saw): loss weights on the continuations only."""
  objective = objectives.get(config.objective)
  formatted = [objective.prompt(p, config.vocabulary, mode) for p in prompts]
  if config.feature_converter == "lm":
    return features.rows("lm", None, [list(f.prefix) + list(c) for f, c in
                                      zip(formatted, continuations)], pad_to,
                         scored_from=[len(f.prefix) for f in formatted])
  return features.rows(config.feature_converter, [f.inputs for f in formatted],
                       [list(f.prefix) + list(c) for f, c in zip(formatted, continuations)],
                       pad_to)
