"""A SeqIO task over an ICLM output directory: contexts shuffled, documents kept in order inside.

Each example is one context: the `targets` tokens of its documents in their ICLM order, an EOS
after each (the last EOS comes from the task's `append_eos_after_trim`, as in every mixjax LM
task). Shuffling moves whole contexts, never documents, so related documents stay back to back;
it is a seeded permutation of all contexts of all shards (`read_contexts_shuffled`), whatever
the shard size. Set the run's `targets` length to the ICLM
`context_tokens` so that no context is trimmed.
"""

import glob
import json
import os
from typing import Iterable, Iterator, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from mixjax.iclm import stages
from mixjax.data import tasks as lm_tasks


def output_shard_paths(output_dir: str) -> list[str]:
  paths = sorted(glob.glob(os.path.join(output_dir, stages.OUTPUT_GLOB)))
  if not paths:
    raise FileNotFoundError(f"No ICLM shards ({stages.OUTPUT_GLOB}) in {output_dir}; run "
                            f"`python -m mixjax.iclm --input ... --output {output_dir}` first.")
  return paths


def context_spans(path: str) -> list[tuple[int, int]]:
  """`(byte offset, byte length)` of each context's run of lines in one output shard."""
  spans, context, start, offset = [], None, 0, 0
  with open(path, "rb") as f:
    for line in f:
      current = json.loads(line)["context"]
      if current != context and offset > start:
        spans.append((start, offset - start))
        start = offset
      context = current
      offset += len(line)
  if offset > start:
    spans.append((start, offset - start))
  return spans


def _read_spans(paths: Sequence[str], spans: Iterable[tuple[int, int, int]]
                ) -> Iterator[tuple[int, list[str]]]:
  """`(context, texts)` of each `(shard, offset, length)` span, in the order given."""
  files = [open(path, "rb") for path in paths]  # pylint: disable=consider-using-with
  try:
    for i, start, length in spans:
      files[i].seek(start)
      records = [json.loads(line) for line in files[i].read(length).splitlines()]
      yield records[0]["context"], [r["text"] for r in records]
  finally:
    for f in files:
      f.close()


def _all_spans(paths: Sequence[str]) -> list[tuple[int, int, int]]:
  return [(i, start, length) for i, path in enumerate(paths)
          for start, length in context_spans(path)]


def read_contexts(paths: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
  """Yields `(context, texts)` per context in output order, texts in order."""
  return _read_spans(paths, _all_spans(paths))


def read_contexts_shuffled(paths: Sequence[str], seed: int | None
                           ) -> Iterator[tuple[int, list[str]]]:
  """Every context once, in a seeded random order over all shards (documents kept in order).

  Shuffling files plus a bounded shuffle buffer is not enough here: the ICLM order runs through
  one topic (often one domain) at a time, so a buffer over consecutive contexts of a big shard
  trains on one domain for thousands of steps. Indexing context spans makes the shuffle global.
  """
  spans = _all_spans(paths)
  order = np.random.default_rng(seed).permutation(len(spans))
  return _read_spans(paths, (spans[k] for k in order))


def context_source(output_dir: str) -> seqio.DataSource:
  """A `train`-only source of `{"texts": [docs], "context": id}`, one example per context.

  With `shuffle_files` (what seqio passes when shuffling) contexts come in a seeded global random
  order; without it, in the ICLM output order.
  """
  paths = output_shard_paths(output_dir)

  def dataset_fn(split, shuffle_files, seed=None):
    del split  # the source has one split
    if shuffle_files:
      contexts = lambda: read_contexts_shuffled(paths, seed)  # noqa: E731
    else:
      contexts = lambda: read_contexts(paths)  # noqa: E731
    return tf.data.Dataset.from_generator(
        lambda: ({"texts": texts, "context": c} for c, texts in contexts()),
        output_signature={"texts": tf.TensorSpec([None], tf.string),
                          "context": tf.TensorSpec([], tf.int64)})
  return lm_tasks.SelfShufflingSource(dataset_fn, splits=("train",))


def tokenize_context(dataset: tf.data.Dataset,
                     output_features: dict[str, seqio.Feature]) -> tf.data.Dataset:
  """`texts` -> `targets`: each document's tokens followed by EOS, the last EOS left to the task."""
  vocab = output_features["targets"].vocabulary

  def fn(example):
    ids = tf.map_fn(vocab.encode_tf, example["texts"],
                    fn_output_signature=tf.RaggedTensorSpec([None], tf.int32, ragged_rank=0))
    eos = tf.fill([tf.shape(example["texts"])[0], 1], tf.constant(vocab.eos_id, tf.int32))
    return {"targets": tf.concat([ids, eos], axis=1).flat_values[:-1]}
  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def register_iclm_task(name: str, output_dir: str, shuffle_buffer_size: int = 1_000,
                       domain: str = "") -> lm_tasks.TaskSpec:
  """Registers (replacing any same-named task) the task over an ICLM output dir: one example
  per context (trimmed to the row, never split), reported under `domain` (default: `name`)."""
  longest, mean = context_lengths(output_dir)
  return lm_tasks.register(lm_tasks.TaskSpec(
      name, context_source(output_dir), domain=domain, tokenize=(tokenize_context,),
      long_documents="trim", shuffle_buffer_size=shuffle_buffer_size,
      max_example_tokens=longest, mean_example_tokens=mean,
      trim_fix=f"rerun `python -m mixjax.iclm` into a new --output with --context_tokens "
               "{row_length}"))


def context_lengths(output_dir: str) -> tuple[int | None, float | None]:
  """The `--context_tokens` an ICLM output was cut with, and its contexts' mean length (byte
  tokens), from the run's recorded config and report; None where they are not recorded."""
  config_path = os.path.join(output_dir, "stages", "config.json")
  report_path = os.path.join(output_dir, stages.REPORT)
  longest = mean = None
  if os.path.exists(config_path):
    with open(config_path) as f:
      longest = json.load(f).get("context_tokens")
  if os.path.exists(report_path):
    with open(report_path) as f:
      mean = json.load(f).get("mean_context_tokens")
  return longest, mean


@gin.configurable
def iclm_task(output_dir: str = gin.REQUIRED, name: str = "mixjax_iclm") -> str:
  """Registers the task over an ICLM output dir and returns its name, for gin:

    MIXTURE_OR_TASK_NAME = @iclm_task()   # see gin/iclm.gin
  """
  if not glob.glob(os.path.join(output_dir, "*.jsonl")):
    raise FileNotFoundError(f"No ICLM shards (*.jsonl) in {output_dir!r}; run "
                            f"`python -m mixjax.iclm --input ... --output {output_dir}` first.")
  register_iclm_task(name, output_dir)
  return name
