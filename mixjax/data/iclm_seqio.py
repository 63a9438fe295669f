"""A SeqIO task over an ICLM output directory: contexts shuffled, documents kept in order inside.

Each example is one context: the `targets` tokens of its documents in their ICLM order, an EOS
after each (the last EOS comes from the task's `append_eos_after_trim`, as in every mixjax LM
task). The task's shuffle buffer and shard shuffling move whole contexts, never documents, so
related documents stay back to back. Set the run's `targets` length to the ICLM
`context_tokens` so that no context is trimmed.
"""

import glob
import json
import os
from typing import Iterator, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from mixjax.data import iclm
from mixjax.data import lm_tasks


def output_shard_paths(output_dir: str) -> list[str]:
  paths = sorted(glob.glob(os.path.join(output_dir, iclm.OUTPUT_GLOB)))
  if not paths:
    raise FileNotFoundError(f"No ICLM shards ({iclm.OUTPUT_GLOB}) in {output_dir}; run "
                            f"`python -m mixjax.iclm --input ... --output {output_dir}` first.")
  return paths


def read_contexts(paths: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
  """Yields `(context, texts)` per context, texts in order (a context never spans two shards)."""
  for path in paths:
    context, texts = None, []
    with open(path, "rb") as f:
      for line in f:
        record = json.loads(line)
        if record["context"] != context and texts:
          yield context, texts
          texts = []
        context = record["context"]
        texts.append(record["text"])
    if texts:
      yield context, texts


def context_source(output_dir: str) -> seqio.DataSource:
  """A `train`-only source of `{"texts": [docs], "context": id}`, one example per context."""
  paths = output_shard_paths(output_dir)

  def dataset_fn(split, shuffle_files, seed=None):
    del split  # the source has one split
    files = list(paths)
    if shuffle_files:
      np.random.default_rng(seed).shuffle(files)
    return tf.data.Dataset.from_generator(
        lambda: ({"texts": texts, "context": c} for c, texts in read_contexts(files)),
        output_signature={"texts": tf.TensorSpec([None], tf.string),
                          "context": tf.TensorSpec([], tf.int64)})
  return seqio.FunctionDataSource(dataset_fn, splits=("train",))


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


def register_iclm_task(name: str, output_dir: str,
                       shuffle_buffer_size: int = 1_000) -> seqio.Task:
  """Registers (replacing any same-named task) the decoder LM task over an ICLM output dir."""
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=context_source(output_dir), output_features=lm_tasks.output_features(),
      preprocessors=[tokenize_context, seqio.preprocessors.append_eos_after_trim],
      shuffle_buffer_size=shuffle_buffer_size)


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
