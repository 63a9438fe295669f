"""Builds the run's batch iterator: mixture -> weight source -> exact allocator -> data iterator.

`make_batch_iterator` resolves the run's schedule (`DataConfig.schedule`; None: the registered
mixture's own rates, as a constant schedule) or takes a given `WeightSource` (weights computed
during training), counts domain sizes (for epochs and repeat caps), checks the repeat cap, and
hands an exact `RowAllocator` to `mixjax.data.pipeline.BatchIterator`. `state` (a checkpointed
`.state()`) resumes exactly.

Domain sizes (one packed epoch per domain) cost a pass over each domain's train split, so they are
counted only when something needs them: size-based rates (temperature, UniMax), a repeat cap
(`MixingConfig.max_epochs`), or `MixingConfig.count_sizes=True` (epochs read per domain in the
metrics). Counted sizes travel in the iterator's state, so a resume never counts again.
"""

import dataclasses
from typing import Mapping

from absl import logging
import gin
import numpy as np
import seqio

from mixjax.data import pipeline
from mixjax.mixing import accounting
from mixjax.mixing import allocation
from mixjax.mixing import schedules as mixtures
from mixjax.mixing import sources


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MixingConfig:
  # Virtual data shards (see mixjax.data.pipeline); each host builds whole shards, and every host
  # count dividing it reads the same batches. None: set from the batch size
  # (`pipeline.default_num_shards`: up to 64, each shard at least 4 rows).
  num_shards: int | None = None
  # Cap on how many epochs of any domain (or {domain: cap}) a schedule may read; None: no cap.
  max_epochs: float | Mapping[str, float] | None = None
  on_exceed: str = "error"           # error | warn
  size_count_max_rows: int = 200_000  # count at most this many rows per domain (then: a bound)
  # Count domain sizes even when nothing needs them, for `mixture/<domain>/epochs` in metrics.
  count_sizes: bool = False


def as_schedule(spec) -> mixtures.Schedule:
  """A schedule as is; rates (a dict or a registered mixture name) as a constant schedule."""
  return spec if isinstance(spec, mixtures.Schedule) else mixtures.constant_schedule(spec)


def _sizes_from_state(state: Mapping) -> dict[str, mixtures.DomainSize]:
  return {d: mixtures.DomainSize(int(r), int(t), bool(c)) for d, (r, t, c) in state["sizes"].items()}


def _check_resumable(state: Mapping):
  if "converted_from" in state:
    raise ValueError(
        f"This MODEL_DIR holds a checkpoint converted from {state['converted_from']} "
        "(`python -m mixjax.convert`), not a training run to resume. Continue pre-training from "
        "it with a new MODEL_DIR: --gin_file=gin/cpt.gin --gin.INIT_FROM=\"'<this dir>'\" "
        "(see gin/cpt.gin).")
  if "batches_consumed" in state:
    raise ValueError(
        "The checkpoint's data state comes from mixjax's old static-mixture iterator (SeqIO's "
        "sampling, resumed by skipping batches); static rates now go through the exact per-step "
        "allocator, which cannot continue that stream. Train this run to its end with the mixjax "
        "version that started it, or start a new MODEL_DIR.")
  if state.get("kind") in pipeline.OLD_STATE_KINDS:
    raise ValueError(
        "The checkpoint's data state comes from an earlier mixjax batch iterator (one data shard "
        "per host, SeqIO's shuffle buffer), whose stream the virtual-shard iterator cannot "
        "continue exactly. Train this run to its end with the mixjax version that started it, or "
        "start a new MODEL_DIR (or branch from it: gin/cpt.gin with INIT_FROM).")
  if state.get("kind") != pipeline.STATE_KIND:
    raise ValueError(f"The checkpoint's data state is of kind {state.get('kind')!r}, not "
                     f"{pipeline.STATE_KIND!r}; it was not written by mixjax's batch iterator.")


def _warn_if_schedule_changed(schedule: mixtures.ResolvedSchedule, batch_size: int,
                              restored: allocation.AllocationState):
  pure = allocation.state_at(schedule, batch_size, restored.step)
  if pure.rows_D != restored.rows_D:
    logging.warning(
        "The checkpoint's data state (rows per domain %s at step %d) differs from what this "
        "schedule gives by then (%s): the schedule changed before this step. Continuing from "
        "the checkpoint's positions.", dict(zip(schedule.domains, restored.rows_D)),
        restored.step, dict(zip(schedule.domains, pure.rows_D)))


def make_batch_iterator(config: pipeline.DataConfig, seed: int,
                        shard_info: seqio.ShardInfo | None, total_steps: int,
                        state: Mapping | None = None, mixing: MixingConfig | None = None,
                        weight_source: sources.WeightSource | None = None
                        ) -> pipeline.BatchIterator:
  """The iterator the trainer consumes: this host's share of `total_steps` global batches."""
  mixing = mixing or MixingConfig()
  shard_info = shard_info or seqio.ShardInfo(0, 1)
  if state:
    _check_resumable(state)
    seed = state["seed"]
  num_shards = int(state["num_shards"] if state else
                   mixing.num_shards or pipeline.default_num_shards(config.batch_size))
  pipeline.rows_per_shard(num_shards, shard_info.num_shards, config.batch_size)
  counted = _sizes_from_state(state) if state and state.get("sizes") else None

  def sizes():  # counted on first use (see the module docstring)
    nonlocal counted
    if counted is None:
      counted = {d: accounting.count_domain_size(t, config, mixing.size_count_max_rows)
                 for d, t in domain_tasks.items()}
    return counted
  ctx = mixtures.context_for(config.mixture_or_task_name, total_steps, config.batch_size,
                             sizes=sizes)
  domain_tasks = {d: t for t, d in ctx.task_domains.items()}
  schedule = (as_schedule(config.schedule if config.schedule is not None
                          else config.mixture_or_task_name).resolve(ctx))
  source = weight_source or schedule
  if tuple(source.domains) != ctx.domains:
    raise ValueError(f"The weight source's domains {tuple(source.domains)} are not the "
                     f"mixture's {ctx.domains} (in that order).")
  if weight_source is None:
    logging.info("Mixture schedule (%d steps):\n%s", total_steps, schedule.describe())
  if state:
    start = allocation.RowAllocator.restored_state(state, ctx.domains)
    shard_start = allocation.RowAllocator.restored_shards(state, ctx.domains)
    source.restore(state.get("weights", {}))
    if weight_source is None:
      _warn_if_schedule_changed(schedule, config.batch_size, start)
  else:
    start, shard_start = allocation.AllocationState.start(len(ctx.domains)), None
  if weight_source is None and mixing.max_epochs is not None:
    # A static source's whole run is known: check its repeats up front.
    counts_SD = allocation.count_table(schedule, config.batch_size, start, total_steps)
    accounting.check_repeats(schedule, ctx, sizes(),
                             np.asarray(start.rows_D) + counts_SD.sum(axis=0),
                             mixing.max_epochs, mixing.on_exceed)
  known = sizes() if mixing.count_sizes else (counted or {})
  return pipeline.BatchIterator(
      config, seed,
      allocation.RowAllocator(source, config.batch_size, start, num_shards, shard_start),
      domain_tasks, total_steps, shard_info,
      epoch_tokens={d: z.tokens for d, z in known.items()},
      tokens=state["tokens"] if state else None,
      extra_state={"sizes": {d: [z.rows, z.tokens, z.complete] for d, z in known.items()}})
