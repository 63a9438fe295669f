"""ICLM's embedding and neighbour stages as an Apache Beam pipeline (the `[beam]` extra).

  scan (here) -> Beam: fit -> embed shards -> docs -> train index -> add shards -> merge
                       -> search shards -> (here) order, write

(`--order random` stops Beam after docs: that order reads no neighbours.)

Each Beam step calls the per-shard functions of `mixjax.iclm.stages` and writes the same files, so
`stages.run` then finds those stages done and runs the traversal on the merged graph, on one
machine (it holds the graph: about 200 bytes per document). DIR must be on a file system every
worker sees. Steps that only one worker can do (fit, docs, train, merge) take a small input:
a sample, metadata, or index files whose inverted lists are concatenated.
"""

import dataclasses
from typing import Sequence

try:
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
except ImportError as e:
  raise ImportError(
      "The Beam runner needs the [beam] extra: pip install -e '.[beam]'. apache-beam 2.77 pins "
      "protobuf < 7, which TensorFlow 2.21 cannot share: install it in its own virtualenv "
      "(mixjax's ICLM stages need only numpy, faiss and tqdm there).") from e

from mixjax.iclm import embed
from mixjax.iclm import io as iclm_io
from mixjax.iclm import knn
from mixjax.iclm import stages


def _context(config: stages.IclmConfig):
  wd = stages.Workdir(config)
  return wd, stages.scan(wd)


# The embedder travels pickled with the steps: a worker process need not have imported the module
# that registered its name, and unpickling it imports the module that defines its class.


def _fit(_, config: stages.IclmConfig, embedder: embed.Embedder) -> bool:
  wd, index = _context(config)
  stages.fit(wd, index, embedder)
  return True


def _embed(shard: int, config: stages.IclmConfig, embedder: embed.Embedder,
           fitted: bool) -> int:
  del fitted  # a side input, so that embedding waits for the fit
  wd, index = _context(config)
  stages.embed_shard(wd, index, embedder, stages.fit(wd, index, embedder), shard)
  return shard


def _docs(_, config: stages.IclmConfig, embedded: Sequence[int]) -> int:
  wd, index = _context(config)
  iclm_io.mark_done(wd.stage("embed"), {"shards": len(embedded)})
  return len(stages.collect_docs(wd, index).rows_S)


def _train(num_shards: int, config: stages.IclmConfig) -> int:
  wd, index = _context(config)
  docs = stages.collect_docs(wd, index)
  if stages.index_spec(wd, docs).kind not in knn.MERGEABLE_KINDS:
    raise ValueError(f"The Beam runner builds the index from shards, which needs one of "
                     f"{', '.join(knn.MERGEABLE_KINDS)}; got --index=hnsw.")
  stages.save_index(stages.train_index(wd, docs), stages.index_path(wd, "trained"))
  return num_shards


def _part_name(shard: int, num_shards: int) -> str:
  return f"part-{shard:05d}-of-{num_shards:05d}"


def _add(shard: int, config: stages.IclmConfig, trained: int) -> int:
  wd, index = _context(config)
  docs = stages.collect_docs(wd, index)
  part = knn.read_index(stages.index_path(wd, "trained"), stages.index_spec(wd, docs))
  stages.add_shard(wd, docs, part, shard)
  stages.save_index(part, stages.index_path(wd, _part_name(shard, trained)))
  return shard


def _merge(_, config: stages.IclmConfig, parts: Sequence[int]) -> bool:
  wd, index = _context(config)
  docs = stages.collect_docs(wd, index)
  spec = stages.index_spec(wd, docs)
  paths = [stages.index_path(wd, _part_name(s, len(parts))) for s in sorted(parts)]
  stages.save_index(knn.merge([knn.read_index(p, spec) for p in paths]), stages.index_path(wd))
  iclm_io.mark_done(wd.stage("index"), dataclasses.asdict(spec))
  return True


def _search(shard: int, config: stages.IclmConfig, merged: bool) -> int:
  del merged  # a side input, so that searching waits for the merged index
  wd, index = _context(config)
  docs = stages.collect_docs(wd, index)
  knn.set_threads(config.threads)
  nn_index = knn.read_index(stages.index_path(wd), stages.index_spec(wd, docs))
  stages.search_shard(wd, docs, nn_index, shard)
  return shard


def _knn_done(_, config: stages.IclmConfig, searched: Sequence[int]) -> None:
  wd, _ = _context(config)
  iclm_io.mark_done(wd.stage("knn"), {"shards": len(searched)})


def build_pipeline(root: beam.PCollection, config: stages.IclmConfig, num_shards: int,
                   embedder: embed.Embedder) -> None:
  """Adds fit..knn to a pipeline (fit..docs for `order="random"`, which reads no neighbours);
  `root` is a one-element PCollection."""
  side = beam.pvalue.AsSingleton
  fitted = root | "Fit" >> beam.Map(_fit, config, embedder)
  embedded = (root.pipeline | "EmbedShards" >> beam.Create(range(num_shards))
              | "SpreadEmbed" >> beam.Reshuffle()
              | "Embed" >> beam.Map(_embed, config, embedder, side(fitted)))
  docs = root | "Docs" >> beam.Map(_docs, config, beam.pvalue.AsList(embedded))
  if "knn" not in stages.plan(config):
    return
  trained = docs | "TrainIndex" >> beam.Map(_train, config)
  shards = (trained | "IndexShards" >> beam.FlatMap(lambda n: list(range(n)))
            | "SpreadIndex" >> beam.Reshuffle())
  parts = shards | "AddToIndex" >> beam.Map(_add, config, side(trained))
  merged = root | "MergeIndex" >> beam.Map(_merge, config, beam.pvalue.AsList(parts))
  searched = (shards | "Search" >> beam.Map(_search, config, side(merged)))
  _ = root | "KnnDone" >> beam.Map(_knn_done, config, beam.pvalue.AsList(searched))


def run(config: stages.IclmConfig, beam_args: Sequence[str], restart: bool = False) -> dict:
  """Runs fit..knn with Beam (unless done), then order and write here; returns the report.

  With `order="random"` Beam runs fit..docs only, as the local runner skips index and knn.
  """
  embedder = stages.make_embedder(config)
  wd = stages.Workdir(config)
  if restart:
    wd.clear()
  wd.check_config()
  index = stages.scan(wd)
  last_beam_stage = "knn" if "knn" in stages.plan(config) else "docs"
  if not wd.done(last_beam_stage):
    num_shards = len(stages.embed_shards(index, config))
    with beam.Pipeline(options=pipeline_options.PipelineOptions(list(beam_args))) as p:
      build_pipeline(p | "Start" >> beam.Create([None]), config, num_shards, embedder)
  return stages.run(config, embedder=embedder)
