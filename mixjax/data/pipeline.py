"""The batch iterator the trainer consumes: SeqIO mixture -> feature converter -> host batches.

The stream is a pure function of (config, seed, host shard): tf.data runs deterministically with
seqio's seeded shuffles and mixture sampling. Its checkpointable state is the number of batches
consumed; restoring rebuilds the stream and skips that many batches, so a resumed run sees
exactly the batches an uninterrupted run would.
"""

import dataclasses
from typing import Iterator, Mapping

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


def get_feature_converter(config: DataConfig) -> seqio.FeatureConverter:
  try:
    cls = FEATURE_CONVERTERS[config.feature_converter]
  except KeyError:
    raise ValueError(f"Unknown feature_converter {config.feature_converter!r}; valid: "
                     f"{sorted(FEATURE_CONVERTERS)}.") from None
  return cls(pack=config.pack)


def get_provider(name: str) -> seqio.DatasetProviderBase:
  """Looks a task or mixture up, with an error that lists what is registered."""
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names()))
    mixjax_known = [n for n in known if n.startswith("mixjax")] or known[:20]
    raise ValueError(f"Unknown task or mixture {name!r}. Registered mixjax tasks/mixtures: "
                     f"{', '.join(mixjax_known)}. Did you `import mixjax_tasks`?") from None


def _tf_options(ds: tf.data.Dataset) -> tf.data.Dataset:
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
    get_provider(self._config.mixture_or_task_name)  # early, clear error for unknown names
    ds = seqio.get_dataset(
        self._config.mixture_or_task_name,
        task_feature_lengths=dict(self._config.task_feature_lengths),
        feature_converter=get_feature_converter(self._config),
        dataset_split="train", shuffle=True, num_epochs=None,
        shard_info=self._shard_info, seed=self._seed, verbose=False)
    ds = _tf_options(ds.batch(self._host_batch_size, drop_remainder=True))
    return ds.skip(skip).prefetch(2).as_numpy_iterator()

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    self._batches_consumed += 1
    return batch

  def state(self) -> dict:
    return {"batches_consumed": self._batches_consumed, "seed": self._seed,
            "shard_index": self._shard_info.index, "num_shards": self._shard_info.num_shards}

  @classmethod
  def from_state(cls, config: DataConfig, state: Mapping, shard_info: seqio.ShardInfo | None = None):
    return cls(config, seed=state["seed"], shard_info=shard_info,
               batches_consumed=state["batches_consumed"])


def eval_batches(task_name: str, task_feature_lengths: Mapping[str, int], batch_size: int,
                 num_batches: int, feature_converter: seqio.FeatureConverter,
                 split: str = "validation") -> list[dict[str, np.ndarray]]:
  """The first `num_batches` packed validation batches of a task (fixed, unshuffled)."""
  ds = seqio.get_dataset(task_name, task_feature_lengths=dict(task_feature_lengths),
                         feature_converter=feature_converter, dataset_split=split,
                         shuffle=False, num_epochs=1, verbose=False)
  ds = _tf_options(ds.batch(batch_size, drop_remainder=False)).take(num_batches)
  return list(ds.as_numpy_iterator())
