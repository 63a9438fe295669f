"""The batch iterator for scheduled mixtures: per-domain packed rows, mixed row by row.

Each domain's task is packed on its own into rows of the run's length (seeded shuffle, repeated
forever). `allocation.count_table` turns the schedule into exact row counts per domain for every
step of the run; in tf.data each step's counts become a seeded permutation of row slots (a pure
function of seed, shard and step) and `choose_from_datasets` takes each domain's next rows. The
slot's domain rides along as a feature, popped for the per-domain accounting.

Data shards: the global batch is `num_shards` equal shard batches, shard v reading only documents
`v mod num_shards` of every domain; host h of H reads shards [h V/H, (h+1) V/H) and nothing else.
So the concatenation of all hosts' batches is the batch one host reads with the same
`num_shards`, and each host reads a disjoint share. Every shard gets the same counts.

The stream is a pure function of (config, seed, step): resuming at step k starts the allocator
from its state at k and skips each domain's stream by the rows it has given. The state (rows
given and owed per domain, tokens, domain sizes) goes into the checkpoint as JSON.
"""

import dataclasses
import zlib
from typing import Iterator, Mapping

from absl import logging
import gin
import jax
from jax.experimental import multihost_utils
import numpy as np
import seqio
import tensorflow as tf

from mixjax.mixing import accounting
from mixjax.mixing import allocation
from mixjax.mixing import schedules as mixtures
from mixjax.data import pipeline

STATE_KIND = "scheduled_mixture"
DOMAIN_KEY = "mixture_domain"  # per-row domain index, carried through tf.data, popped before use


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MixingConfig:
  # Data shards; each host reads whole shards. None: one per host. Fix it (e.g. to the largest
  # host count you will use) to make the stream independent of the number of hosts.
  num_shards: int | None = None
  # Cap on how many epochs of any domain (or {domain: cap}) a schedule may read; None: no cap.
  max_epochs: float | Mapping[str, float] | None = None
  on_exceed: str = "error"           # error | warn
  size_count_max_rows: int = 200_000  # count at most this many rows per domain (then: a bound)


def as_schedule(spec) -> mixtures.Schedule:
  """A schedule as is; rates (a dict or a registered mixture name) as a constant schedule."""
  return spec if isinstance(spec, mixtures.Schedule) else mixtures.constant_schedule(spec)


def _sum_over_processes(x_D: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return x_D
  return np.asarray(multihost_utils.process_allgather(x_D)).sum(axis=0)


@dataclasses.dataclass(frozen=True)
class _StepRecord:
  weights_D: np.ndarray      # scheduled
  realised_D: np.ndarray     # share of this host's rows
  rows_D: np.ndarray         # cumulative rows per shard
  local_tokens_D: np.ndarray  # cumulative target tokens this host read since (re)start
  fingerprint: int           # crc32 of this host's target tokens


class ScheduledBatchIterator(Iterator[dict]):
  """This host's share of each of the run's `total_steps` scheduled global batches (numpy)."""

  _HISTORY = 8  # steps of accounting kept for `step_metrics` (the loop logs one step late)

  def __init__(self, config: pipeline.DataConfig, seed: int, total_steps: int,
               shard_info: seqio.ShardInfo | None = None, mixing: MixingConfig | None = None,
               state: Mapping | None = None):
    mixing = mixing or MixingConfig()
    shard_info = shard_info or seqio.ShardInfo(0, 1)
    self._config, self._seed = config, seed
    self.num_shards = int(state["num_shards"] if state else
                          mixing.num_shards or shard_info.num_shards)
    self._check_shape(shard_info)
    per_host = self.num_shards // shard_info.num_shards
    self._shards = range(shard_info.index * per_host, (shard_info.index + 1) * per_host)
    self.rows_per_shard = config.batch_size // self.num_shards

    self.ctx = mixtures.context_for(config.mixture_or_task_name, total_steps, config.batch_size,
                                    sizes=lambda: self.sizes)
    self.tasks = {d: t for t, d in self.ctx.task_domains.items()}
    self.sizes = (_sizes_from_state(state) if state else
                  {d: accounting.count_domain_size(t, config, mixing.size_count_max_rows)
                   for d, t in self.tasks.items()})
    self.schedule = as_schedule(config.schedule).resolve(self.ctx)
    logging.info("Mixture schedule (%d steps):\n%s", total_steps, self.schedule.describe())
    start = (self._restored_allocation(state) if state else
             allocation.AllocationState.start(len(self.ctx.domains)))
    # Counts of every remaining step: the stream is finite, `total_steps` batches in all.
    self._counts_SD = allocation.count_table(self.schedule, self.rows_per_shard, start,
                                             total_steps)
    accounting.check_repeats(
        self.schedule, self.ctx, self.sizes,
        (np.asarray(start.rows_D) + self._counts_SD.sum(axis=0)) * self.num_shards,
        mixing.max_epochs, mixing.on_exceed)
    self._allocator = allocation.RowAllocator(self.schedule, self.rows_per_shard, start)
    domains = self.ctx.domains
    self._token_base_D = np.asarray([state["tokens"].get(d, 0) for d in domains]
                                    if state else np.zeros(len(domains)), np.int64)
    self._local_tokens_D = np.zeros(len(domains), np.int64)
    self._history: dict[int, _StepRecord] = {}
    self._start, self._iterator = start, None  # tf.data is built on the first batch

  def _check_shape(self, shard_info: seqio.ShardInfo):
    hosts, batch = shard_info.num_shards, self._config.batch_size
    if self.num_shards % hosts or batch % self.num_shards:
      raise ValueError(f"MixingConfig.num_shards={self.num_shards} must be a multiple of the "
                       f"host count ({hosts}) and divide batch_size={batch}.")

  def _restored_allocation(self, state: Mapping) -> allocation.AllocationState:
    domains = self.ctx.domains
    restored = allocation.AllocationState(
        int(state["step"]), tuple(int(state["rows"].get(d, 0)) for d in domains),
        tuple(float(state["owed"].get(d, 0.0)) for d in domains))
    pure = allocation.state_at(self.schedule, self.rows_per_shard, restored.step)
    if pure.rows_D != restored.rows_D:
      logging.warning(
          "The checkpoint's data state (rows per domain %s at step %d) differs from what this "
          "schedule gives by then (%s): the schedule changed before this step. Continuing from "
          "the checkpoint's positions.", dict(zip(domains, restored.rows_D)), restored.step,
          dict(zip(domains, pure.rows_D)))
    return restored

  def _shard_dataset(self, shard: int, start: allocation.AllocationState) -> tf.data.Dataset:
    streams = [
        pipeline.get_dataset(self._config, self.tasks[d], "train", shuffle=True, num_epochs=None,
                             seed=allocation.domain_seed(self._seed, self.tasks[d]),
                             shard_info=seqio.ShardInfo(shard, self.num_shards)).skip(skip)
        for d, skip in zip(self.ctx.domains, start.rows_D)]
    key = tf.constant(allocation.shuffle_key(self._seed, shard), tf.int64)
    steps = tf.range(start.step, start.step + len(self._counts_SD), dtype=tf.int64)

    def place(step, counts_D):  # domain of each row slot: a seeded permutation per (shard, step)
      ids_R = tf.repeat(tf.range(len(streams), dtype=tf.int64), counts_D)
      return tf.random.experimental.stateless_shuffle(ids_R, seed=tf.stack([key, step]))

    choice = tf.data.Dataset.from_tensor_slices((steps, self._counts_SD)).map(place).unbatch()
    rows = tf.data.Dataset.choose_from_datasets(streams, choice)
    rows = tf.data.Dataset.zip((rows, choice)).map(lambda row, d: {**row, DOMAIN_KEY: d})
    return rows.batch(self.rows_per_shard, drop_remainder=True)

  def _build(self, start: allocation.AllocationState):
    shards = [self._shard_dataset(v, start) for v in self._shards]
    ds = shards[0] if len(shards) == 1 else tf.data.Dataset.zip(tuple(shards)).map(
        lambda *batches: {k: tf.concat([b[k] for b in batches], 0) for k in batches[0]})
    return pipeline.tf_options(ds).prefetch(2).as_numpy_iterator()

  def __next__(self) -> dict[str, np.ndarray]:
    """The next host batch; StopIteration after `total_steps` batches."""
    if self._iterator is None:
      self._iterator = self._build(self._start)
    batch = next(self._iterator)
    ids_R = batch.pop(DOMAIN_KEY)
    step = self._allocator.state.step
    weights_D = self.schedule.weights_D(step)
    self._allocator.next()
    targets = batch["decoder_target_tokens"]
    np.add.at(self._local_tokens_D, ids_R, np.count_nonzero(targets, axis=1))
    self._history[step + 1] = _StepRecord(
        weights_D, np.bincount(ids_R, minlength=len(weights_D)) / len(ids_R),
        np.asarray(self._allocator.state.rows_D), self._local_tokens_D.copy(),
        zlib.crc32(np.ascontiguousarray(targets).tobytes()))
    self._history.pop(step + 1 - self._HISTORY, None)
    return batch

  def _tokens_D(self, local_tokens_D: np.ndarray) -> np.ndarray:
    """Target tokens read per domain by all hosts (sums over processes: call on every host)."""
    return self._token_base_D + _sum_over_processes(local_tokens_D)

  def step_metrics(self, step: int) -> dict[str, float]:
    """Accounting for the batch of train step `step` (one of the last few), for metrics.jsonl.

    Scheduled and realised weight (share of the batch's rows), and cumulative rows, target tokens
    and epochs (tokens / tokens per epoch) per domain; `data/fingerprint` identifies the batch.
    """
    record = self._history.get(step)
    if record is None:
      return {}
    tokens_D = self._tokens_D(record.local_tokens_D)
    metrics = {"data/fingerprint": float(record.fingerprint)}
    for d, domain in enumerate(self.ctx.domains):
      metrics[f"mixture/{domain}/weight_scheduled"] = float(record.weights_D[d])
      metrics[f"mixture/{domain}/weight_realised"] = float(record.realised_D[d])
      metrics[f"mixture/{domain}/rows"] = float(record.rows_D[d] * self.num_shards)
      metrics[f"mixture/{domain}/tokens"] = float(tokens_D[d])
      metrics[f"mixture/{domain}/epochs"] = tokens_D[d] / self.sizes[domain].tokens
    return metrics

  def state(self) -> dict:
    """JSON-able state: rows given and owed per domain by each shard (all shards alike), global
    tokens (summed over processes: call on every host) and the domain sizes."""
    s, domains = self._allocator.state, self.ctx.domains
    tokens_D = self._tokens_D(self._local_tokens_D)
    return {"kind": STATE_KIND, "step": s.step, "seed": self._seed, "num_shards": self.num_shards,
            "rows": dict(zip(domains, s.rows_D)), "owed": dict(zip(domains, s.owed_D)),
            "tokens": {d: int(t) for d, t in zip(domains, tokens_D)},
            "sizes": {d: [z.rows, z.tokens, z.complete] for d, z in self.sizes.items()}}


def _sizes_from_state(state: Mapping) -> dict[str, mixtures.DomainSize]:
  return {d: mixtures.DomainSize(int(r), int(t), bool(c)) for d, (r, t, c) in state["sizes"].items()}


def make_batch_iterator(config: pipeline.DataConfig, seed: int, shard_info: seqio.ShardInfo,
                        total_steps: int, state: Mapping | None = None,
                        mixing: MixingConfig | None = None):
  """The iterator the trainer consumes: scheduled when `config.schedule` is set, else SeqIO's
  static mixture (`pipeline.BatchIterator`); `state` is a checkpointed `.state()` to resume."""
  scheduled_state = bool(state) and state.get("kind") == STATE_KIND
  if config.schedule is None:
    if scheduled_state:
      raise ValueError("The checkpoint's data state is a scheduled mixture's, but no schedule is "
                       "set; set MIXTURE_SCHEDULE (e.g. @constant_schedule()) to resume it.")
    if state:
      return pipeline.BatchIterator.from_state(config, state, shard_info)
    return pipeline.BatchIterator(config, seed=seed, shard_info=shard_info)
  if state and not scheduled_state:
    raise ValueError("The checkpoint's data state is a static SeqIO mixture's (it does not say "
                     "how many rows each domain gave), so a schedule cannot continue it. To branch "
                     "a cooldown from a base run, train the base with MIXTURE_SCHEDULE = "
                     "@constant_schedule() too.")
  return ScheduledBatchIterator(config, seed=state["seed"] if state else seed,
                                total_steps=total_steps, shard_info=shard_info, mixing=mixing,
                                state=state)
