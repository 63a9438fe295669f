"""Building blocks for language-modelling SeqIO tasks: text sources in, `targets` tokens out.

Every task mixjax registers has one output feature, `targets` (byte vocabulary, EOS appended),
and the same preprocessing, so mixtures of them pack together. Sources are in-memory text lists
(the embedded corpus), TFDS builders (c4, wikipedia) or local JSONL/text files.
"""

import functools
import json
import os
from typing import Callable, Iterable, Mapping, Sequence

import seqio
import tensorflow as tf

from mixjax import vocab as vocab_lib


def output_features() -> dict[str, seqio.Feature]:
  return {"targets": seqio.Feature(vocab_lib.get_vocabulary(), add_eos=True)}


def split_to_length(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                    feature: str = "targets") -> tf.data.Dataset:
  """Splits each document's tokens into consecutive pieces of at most the feature's length.

  Without this, the feature converter would trim every document longer than a row and its tail
  would never be trained on. Only `feature` is kept.
  """
  length = sequence_length[feature]

  def pieces(example):
    tokens = example[feature]
    n = tf.shape(tokens, out_type=tf.int64)[0]
    splits = tf.concat([tf.range(0, n, length, dtype=tf.int64), [n]], axis=0)
    return tf.data.Dataset.from_tensor_slices(
        {feature: tf.RaggedTensor.from_row_splits(tokens, splits)})
  return dataset.flat_map(pieces)


def tokenize_preprocessors(text_key: str) -> list:
  """Text field -> tokenized `targets` (shared by every objective)."""
  return [
      functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
      seqio.preprocessors.tokenize,
  ]


def _lm_preprocessors(text_key: str) -> list:
  return tokenize_preprocessors(text_key) + [
      seqio.preprocessors.append_eos,  # EOS ends the document, not each piece
      split_to_length,
  ]


# Metadata per task name: the domain it reports under, its probe set (if any), and its text
# source (so objectives such as UL2 can derive variants of any LM task).
TASK_DOMAINS: dict[str, str] = {}
TASK_PROBES: dict[str, Callable[[], Sequence[dict]]] = {}
TASK_TEXT_SOURCES: dict[str, tuple[seqio.DataSource, str]] = {}


def domain_of(task_name: str) -> str:
  """The name a task's metrics are reported under (`eval/<domain>/loss`)."""
  return TASK_DOMAINS.get(task_name, task_name)


def register_lm_task(name: str, source: seqio.DataSource, text_key: str = "text",
                     shuffle_buffer_size: int = 10_000, domain: str | None = None,
                     probes_fn: Callable[[], Sequence[dict]] | None = None) -> seqio.Task:
  """Registers (replacing any same-named task) a decoder LM task over `source`'s `text_key`.

  `probes_fn` returns probe dicts `{"prompt", "answer", "candidates"}` scored at eval time.
  """
  seqio.TaskRegistry.remove(name)
  TASK_DOMAINS[name] = domain or name
  TASK_TEXT_SOURCES[name] = (source, text_key)
  if probes_fn is not None:
    TASK_PROBES[name] = probes_fn
  return seqio.TaskRegistry.add(
      name, source=source, output_features=output_features(),
      preprocessors=_lm_preprocessors(text_key), shuffle_buffer_size=shuffle_buffer_size)


def texts_source(texts_by_split: Mapping[str, Callable[[], Sequence[str]]]) -> seqio.DataSource:
  """A source over in-memory texts; each split's list is produced lazily, on first use."""
  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed  # Order is shuffled by the task's shuffle buffer, seeded by seqio.
    return tf.data.Dataset.from_tensor_slices({"text": list(texts_by_split[split]())})
  return seqio.FunctionDataSource(dataset_fn, splits=tuple(texts_by_split))


class JsonlFormatError(ValueError):
  """A line of a JSONL corpus file is not a JSON object with a string text field."""


def read_jsonl_texts(paths: Iterable[str], text_key: str = "text") -> Iterable[str]:
  """Yields `record[text_key]` from JSONL files; a bad line raises naming file, line and fix."""
  for path in paths:
    with tf.io.gfile.GFile(path, "rb") as f:
      for line_no, raw in enumerate(f, start=1):
        if not raw.strip():
          continue
        where = f"{path}:{line_no}"
        try:
          record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
          raise JsonlFormatError(f"{where}: not valid UTF-8 JSON ({e}). Each line must be one JSON "
                                 "object; fix or remove the line.") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
          raise JsonlFormatError(f"{where}: expected a JSON object with a string {text_key!r} "
                                 "field; set text_key= to the field holding the text.")
        yield record[text_key]


def register_jsonl_task(name: str, files: Mapping[str, Sequence[str]],
                        text_key: str = "text") -> seqio.Task:
  """Registers a task over local JSONL files: `files` maps split -> list of paths (globs ok)."""
  resolved = {}
  for split, patterns in files.items():
    paths = sorted(p for pattern in patterns for p in tf.io.gfile.glob(os.fspath(pattern)))
    if not paths:
      raise FileNotFoundError(f"Task {name!r} split {split!r}: no files match {list(patterns)}.")
    resolved[split] = paths

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    paths = resolved[split]
    return tf.data.Dataset.from_generator(
        lambda: ({"text": t} for t in read_jsonl_texts(paths, text_key)),
        output_signature={"text": tf.TensorSpec((), tf.string)})
  return register_lm_task(name, seqio.FunctionDataSource(dataset_fn, splits=tuple(resolved)))


class _TfdsSource(seqio.TfdsDataSource):
  """A TFDS source that tolerates unknown split sizes (mock data, partially prepared info)."""

  def num_input_examples(self, split: str) -> int | None:
    try:
      return super().num_input_examples(split)
    except KeyError:
      return None  # seqio then only skips its small-dataset in-memory cache


def register_tfds_task(name: str, tfds_name: str, text_key: str = "text",
                       splits: Mapping[str, str] | None = None,
                       tfds_data_dir: str | None = None) -> seqio.Task:
  """Registers a task over a TFDS text corpus (e.g. 'c4/en:3.1.0', 'wikipedia/20230601.en')."""
  source = _TfdsSource(tfds_name=tfds_name, splits=splits, tfds_data_dir=tfds_data_dir)
  return register_lm_task(name, source, text_key=text_key)
