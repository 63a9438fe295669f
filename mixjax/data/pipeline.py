"""The batch iterator the trainer consumes: SeqIO mixture -> feature converter -> host batches.

The stream is a pure function of (config, seed, host shard): tf.data runs deterministically with
seqio's seeded shuffles and mixture sampling. Its checkpointable state is the number of batches
consumed; restoring rebuilds the stream and skips that many batches, so a resumed run sees
exactly the batches an uninterrupted run would.
"""

import dataclasses
from typing import Any, Iterator, Mapping

import gin
import numpy as np
import seqio
import tensorflow as tf

FEATURE_CONVERTERS = {
    "lm": seqio.DecoderFeatureConverter,
    "prefix_lm": seqio.PrefixLMFeatureConverter,
    "enc_dec": seqio.EncDecFeatureConverter,
}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  mixture_or_task_name: str = gin.REQUIRED
  task_feature_lengths: Mapping[str, int] = gin.REQUIRED
  batch_size: int = gin.REQUIRED   # global batch, in packed sequences
  feature_converter: str = "lm"    # lm | prefix_lm | enc_dec
  pack: bool = True
  objective: str = "lm"            # lm | ul2 (UL2 variants of the tasks, see ul2_tasks.py)
  # A mixtures.Schedule (gin: MIXTURE_SCHEDULE) of the mixture's domain rates over training,
  # read by scheduled_pipeline; None: the SeqIO mixture's static rates, read by BatchIterator.
  schedule: Any = None


OBJECTIVES = ("lm", "ul2")


def get_feature_converter(config: DataConfig) -> seqio.FeatureConverter:
  try:
    cls = FEATURE_CONVERTERS[config.feature_converter]
  except KeyError:
    raise ValueError(f"Unknown feature_converter {config.feature_converter!r}; valid: "
                     f"{sorted(FEATURE_CONVERTERS)}.") from None
  if cls is seqio.PrefixLMFeatureConverter:
    # Inputs and targets share the summed row length; the denoisers budget the sum.
    return cls(pack=config.pack, apply_length_check=False)
  return cls(pack=config.pack)


def resolve_task_name(config: DataConfig, name: str | None = None) -> str:
  """The SeqIO task/mixture that serves `name` (default: the config's) under the objective."""
  name = name or config.mixture_or_task_name
  get_provider(name)  # early, clear error for unknown names
  if config.objective == "lm":
    return name
  if config.objective == "ul2":
    from mixjax.data.objectives import ul2 as ul2_tasks  # local: only UL2 runs pay for the denoisers' import
    layout = "prefix_lm" if config.feature_converter == "prefix_lm" else "enc_dec"
    return ul2_tasks.ul2_variant(name, layout)
  raise ValueError(f"Unknown objective {config.objective!r}; valid: {', '.join(OBJECTIVES)}.")


def get_dataset(config: DataConfig, task_name: str, split: str, shuffle: bool,
                num_epochs: int | None, seed: int | None = None,
                shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  """`seqio.get_dataset` with the config's converter; the one place the pipeline calls SeqIO."""
  return seqio.get_dataset(
      resolve_task_name(config, task_name),
      task_feature_lengths=dict(config.task_feature_lengths),
      feature_converter=get_feature_converter(config), dataset_split=split, shuffle=shuffle,
      num_epochs=num_epochs, shard_info=shard_info, seed=seed, verbose=False,
      trim_output_features=config.feature_converter != "prefix_lm")


def get_provider(name: str) -> seqio.DatasetProviderBase:
  """Looks a task or mixture up, with an error that lists what is registered."""
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names()))
    mixjax_known = [n for n in known if n.startswith("mixjax")] or known[:20]
    raise ValueError(f"Unknown task or mixture {name!r}. Registered mixjax tasks/mixtures: "
                     f"{', '.join(mixjax_known)}. Did you `import mixjax_tasks`?") from None


def tf_options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 2
  return ds.with_options(options)


class BatchIterator(Iterator[dict]):
  """Infinite iterator of this host's share of the global batch, as numpy dicts."""

  def __init__(self, config: DataConfig, seed: int, shard_info: seqio.ShardInfo | None = None,
               batches_consumed: int = 0):
    shard_info = shard_info or seqio.ShardInfo(0, 1)
    if config.batch_size % shard_info.num_shards:
      raise ValueError(f"batch_size={config.batch_size} must divide evenly over "
                       f"{shard_info.num_shards} hosts.")
    self._config, self._seed, self._shard_info = config, seed, shard_info
    self._host_batch_size = config.batch_size // shard_info.num_shards
    self._batches_consumed = batches_consumed
    self._iterator = self._build(batches_consumed)

  def _build(self, skip: int):
    ds = get_dataset(self._config, self._config.mixture_or_task_name, "train", shuffle=True,
                     num_epochs=None, seed=self._seed, shard_info=self._shard_info)
    ds = tf_options(ds.batch(self._host_batch_size, drop_remainder=True))
    return ds.skip(skip).prefetch(2).as_numpy_iterator()

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    self._batches_consumed += 1
    return batch

  def step_metrics(self, step: int) -> dict[str, float]:
    del step  # SeqIO samples the static mixture; it keeps no per-domain accounting
    return {}

  def state(self) -> dict:
    return {"batches_consumed": self._batches_consumed, "seed": self._seed,
            "shard_index": self._shard_info.index, "num_shards": self._shard_info.num_shards}

  @classmethod
  def from_state(cls, config: DataConfig, state: Mapping, shard_info: seqio.ShardInfo | None = None):
    return cls(config, seed=state["seed"], shard_info=shard_info,
               batches_consumed=state["batches_consumed"])


def eval_batches(config: DataConfig, task_name: str, batch_size: int, num_batches: int,
                 split: str = "validation") -> list[dict[str, np.ndarray]]:
  """The first `num_batches` packed validation batches of a task (fixed, unshuffled)."""
  ds = get_dataset(config, task_name, split, shuffle=False, num_epochs=1)
  ds = tf_options(ds.batch(batch_size, drop_remainder=False)).take(num_batches)
  return list(ds.as_numpy_iterator())
