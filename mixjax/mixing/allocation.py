"""Exact per-step row counts for a scheduled mixture, and where each row sits in the batch.

The batch at step t has R rows; the schedule gives weights w_D(t). By the end of step t domain d
is owed R * sum_{s<=t} w_d(s) rows. Each step hands out R rows by largest remainder of what each
domain is still owed (the carry), so cumulative counts stay within about a row of the schedule's
integral: every block of steps holds the scheduled counts, not just in expectation. A domain
whose weight is 0 at step t gets no rows then.

Counts depend only on the schedule and the step, so the rows each domain has given up to step
t are a pure function of (schedule, t); the carry is kept in the state as well, so that a run
may continue under a different schedule from a checkpoint (branching for a cooldown). The
batch's counts are then dealt to its virtual data shards (`split_over_shards`, each shard with a
carry of its own), and where each row sits in its shard's part of the batch is a seeded
permutation (`mixjax.data.pipeline.place_rows`), keyed by (seed, shard, step).
"""

import dataclasses

import numpy as np

from mixjax.mixing import schedules as mixtures


def apportion(owed_D: np.ndarray, eligible_D: np.ndarray, total: int) -> np.ndarray:
  """Integer counts `[D]` summing to `total`, given to `eligible_D` domains by largest owed
  remainder (ties to the first domain). `owed_D` may be fractional or slightly negative."""
  if not eligible_D.any():
    raise ValueError("apportion: no eligible domain.")
  counts_D = np.where(eligible_D, np.maximum(np.floor(owed_D), 0), 0).astype(np.int64)
  while counts_D.sum() < total:
    counts_D[np.argmax(np.where(eligible_D, owed_D - counts_D, -np.inf))] += 1
  while counts_D.sum() > total:
    over_D = np.where(eligible_D & (counts_D > 0), owed_D - counts_D, np.inf)
    counts_D[np.argmin(over_D)] -= 1
  return counts_D


def split_over_shards(counts_D: np.ndarray, owed_VD: np.ndarray, first: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Deals a batch's counts `[D]` to V virtual shards of equal size: counts `[V, D]` (each row
  sums to the shard's rows, each column to the domain's count) and the shards' new carry.

  Each shard is owed 1/V of every domain's rows; row by row, the (shard, domain) pair owed most
  (ties: from shard `first` on, which the caller rotates) takes the next row, among shards with
  room and domains with rows left. So every shard's cumulative rows of each domain stay within a
  few rows of 1/V of the domain's (tests/test_mixtures.py measures the bound).
  """
  num_shards = len(owed_VD)
  rows = int(counts_D.sum()) // num_shards
  order = (np.arange(num_shards) + first) % num_shards  # tie-break order of the shards
  owed_VD = (owed_VD + counts_D / num_shards)[order]
  room_V = np.full(num_shards, rows)
  left_D = np.asarray(counts_D, np.int64).copy()
  counts_VD = np.zeros(owed_VD.shape, np.int64)
  for _ in range(rows * num_shards):
    open_VD = (room_V > 0)[:, None] & (left_D > 0)[None, :]
    v, d = np.unravel_index(np.argmax(np.where(open_VD, owed_VD - counts_VD, -np.inf)),
                            owed_VD.shape)
    counts_VD[v, d] += 1
    room_V[v] -= 1
    left_D[d] -= 1
  back = np.argsort(order)
  return counts_VD[back], (owed_VD - counts_VD)[back]


@dataclasses.dataclass(frozen=True)
class AllocationState:
  """After `step` batches: rows given per domain, and rows still owed (the carry)."""
  step: int
  rows_D: tuple[int, ...]
  owed_D: tuple[float, ...]

  @classmethod
  def start(cls, num_domains: int) -> "AllocationState":
    return cls(0, (0,) * num_domains, (0.0,) * num_domains)


class RowAllocator:
  """Steps through a weight source, `rows_per_step` rows a batch dealt to `num_shards` virtual
  data shards (the data iterator's allocator).

  `source` is a `mixjax.mixing.sources.WeightSource` (a resolved schedule is one): the weights of
  each step are asked for when that step's counts are made, so weights updated from training
  apply from the next step on, deterministically.
  """

  def __init__(self, source, rows_per_step: int, state: AllocationState | None = None,
               num_shards: int = 1, shard_state: dict | None = None):
    self.source, self.rows_per_step, self.num_shards = source, rows_per_step, num_shards
    self.domains = tuple(source.domains)
    self.alloc = state or AllocationState.start(len(self.domains))
    self.last_weights_D = np.zeros(len(self.domains))
    shape = (num_shards, len(self.domains))
    shard_state = shard_state or {"rows": np.zeros(shape), "owed": np.zeros(shape)}
    self.shard_rows_VD = np.asarray(shard_state["rows"], np.int64).reshape(shape)
    self.shard_owed_VD = np.asarray(shard_state["owed"], float).reshape(shape)

  @property
  def step(self) -> int:
    return self.alloc.step

  @property
  def rows_D(self) -> tuple[int, ...]:
    return self.alloc.rows_D

  def next(self) -> np.ndarray:
    """Counts `[V, D]` of each shard's part of the next batch; advances the state."""
    s = self.alloc
    w_D = np.asarray(self.source.weights_D(s.step), float)
    owed_D = np.asarray(s.owed_D) + self.rows_per_step * w_D
    counts_D = apportion(owed_D, w_D > 0, self.rows_per_step)
    self.alloc = AllocationState(s.step + 1, tuple(int(r) for r in np.add(s.rows_D, counts_D)),
                                 tuple(float(o) for o in owed_D - counts_D))
    self.last_weights_D = w_D
    counts_VD, self.shard_owed_VD = split_over_shards(counts_D, self.shard_owed_VD,
                                                      first=s.step % self.num_shards)
    self.shard_rows_VD = self.shard_rows_VD + counts_VD
    return counts_VD

  def advance_to(self, step: int) -> AllocationState:
    while self.alloc.step < step:
      self.next()
    return self.alloc

  def update(self, step: int, stats) -> None:
    self.source.update(step, stats)

  def state(self) -> dict:
    """JSON-able: step, rows given and owed per domain (in all and per shard), and the weight
    source's state."""
    s = self.alloc
    return {"step": s.step, "rows": dict(zip(self.domains, s.rows_D)),
            "owed": dict(zip(self.domains, s.owed_D)), "weights": self.source.state(),
            "shards": {"domains": list(self.domains), "rows": self.shard_rows_VD.tolist(),
                       "owed": self.shard_owed_VD.tolist()}}

  @staticmethod
  def restored_state(state, domains) -> AllocationState:
    """The allocation part of a saved `state()`."""
    return AllocationState(int(state["step"]),
                           tuple(int(state["rows"].get(d, 0)) for d in domains),
                           tuple(float(state["owed"].get(d, 0.0)) for d in domains))

  @staticmethod
  def restored_shards(state, domains) -> dict:
    """The per-shard part of a saved `state()`, in the order of `domains`."""
    saved = state["shards"]
    order = [saved["domains"].index(d) for d in domains]
    return {k: np.asarray(saved[k])[:, order] for k in ("rows", "owed")}


def state_at(schedule: mixtures.ResolvedSchedule, rows_per_step: int, step: int) -> AllocationState:
  """The pure-function state after `step` batches of a fresh run."""
  return RowAllocator(schedule, rows_per_step).advance_to(step)


def count_table(schedule: mixtures.ResolvedSchedule, rows_per_step: int, start: AllocationState,
                end_step: int) -> np.ndarray:
  """Counts `[S, D]` of the batches at steps [start.step, end_step), continuing from `start`."""
  allocator = RowAllocator(schedule, rows_per_step, start)
  counts_SD = [allocator.next().sum(axis=0) for _ in range(max(end_step - start.step, 0))]
  return np.asarray(counts_SD, np.int64).reshape(-1, len(schedule.domains))
