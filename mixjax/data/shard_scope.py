"""The virtual data shard a tf.data pipeline is being built for.

`pipeline.shard_rows` traces one pipeline function for all of a host's virtual shards (tracing is
what costs, not the shards), so the shard index is a tensor there, and every stateless seed that
SeqIO hands to preprocessors is the same for all shards. Preprocessors whose randomness must
differ per shard (UL2's denoisers) fold `current()` into their seeds.
"""

import contextlib

_building: list = []


@contextlib.contextmanager
def building(shard):
  """Marks the pipeline built inside as virtual shard `shard` (a scalar int64 tensor)."""
  _building.append(shard)
  try:
    yield
  finally:
    _building.pop()


def current():
  """The shard tensor of the pipeline being built, or None outside `shard_rows`."""
  return _building[-1] if _building else None
