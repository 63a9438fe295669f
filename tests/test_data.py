"""Data tests: tasks register and load, JSONL/TFDS sources, the batch iterator's determinism."""

import json

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

import mixjax_tasks  # noqa: F401
from mixjax.data import tasks as lm_tasks
from mixjax.data import pipeline
from mixjax.mixing import stream
from mixjax.testbed import corpus as synthetic
from mixjax import vocab as vocab_lib
from tests import helpers
from tests import mixture_tasks


def _first_batches(config, n, seed, shard_info=None, total_steps=8):
  it = stream.make_batch_iterator(config, seed, shard_info, total_steps)
  return [next(it) for _ in range(n)], it


def test_synthetic_tasks_and_mixture_are_registered():
  mix = seqio.get_mixture_or_task("mixjax_synthetic_mix")
  assert sorted(t.name for t in mix.tasks) == sorted(
      f"mixjax_synthetic_{d}" for d in synthetic.DOMAINS)
  for d in synthetic.PROBE_DOMAINS:
    assert lm_tasks.get(f"mixjax_synthetic_{d}").probes is not None
    assert lm_tasks.domain_of(f"mixjax_synthetic_{d}") == d


def test_synthetic_task_tokens_round_trip():
  ds = seqio.get_dataset("mixjax_synthetic_math", {"targets": 4096},
                         feature_converter=seqio.PassThroughFeatureConverter(),
                         dataset_split="validation", shuffle=False, verbose=False)
  example = next(ds.as_numpy_iterator())
  first_doc = synthetic.document(synthetic.CorpusConfig(), "validation", "math", 0)["text"]
  tokens = list(example["targets"])
  assert tokens[-1] == 1  # EOS ends the document (shorter than 4096 bytes)
  assert vocab_lib.get_vocabulary().decode(tokens[:-1]) == first_doc


def test_batches_are_packed_with_segments_and_positions():
  config = pipeline.DataConfig(mixture_tasks.MIX, {"targets": 1024}, batch_size=4)
  (batch,), _ = _first_batches(config, 1, seed=0)
  assert batch["decoder_target_tokens"].shape == (4, 1024)
  assert batch["decoder_segment_ids"].max() >= 2  # several documents share a row
  seg, pos = batch["decoder_segment_ids"], batch["decoder_positions"]
  starts = np.diff(seg, axis=1, prepend=0) != 0
  assert np.all(pos[starts & (seg > 0)] == 0)  # positions restart at each document


def test_long_documents_are_split_not_truncated():
  config = pipeline.DataConfig("mixjax_synthetic_bios", {"targets": 32}, batch_size=64)
  (batch,), _ = _first_batches(config, 1, seed=0)
  # Pieces of 32 bytes fill rows; every document's EOS survives in some piece.
  assert (batch["decoder_target_tokens"] > 0).mean() > 0.95
  assert (batch["decoder_target_tokens"] == 1).sum() >= 1


def test_iterator_is_deterministic_and_resumes_exactly():
  config = pipeline.DataConfig(mixture_tasks.MIX, {"targets": 64}, batch_size=4)
  straight, _ = _first_batches(config, 6, seed=3)
  again, _ = _first_batches(config, 6, seed=3)
  other, _ = _first_batches(config, 6, seed=4)
  first_half, it = _first_batches(config, 3, seed=3)
  resumed = stream.make_batch_iterator(config, 0, None, 8, state=it.state())
  second_half = [next(resumed) for _ in range(3)]
  for a, b, c in zip(straight, again, first_half + second_half):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
      np.testing.assert_array_equal(a[k], c[k])
  assert any(not np.array_equal(a["decoder_target_tokens"], o["decoder_target_tokens"])
             for a, o in zip(straight, other))


def test_host_shards_are_disjoint_halves():
  config = pipeline.DataConfig(f"{mixture_tasks.PREFIX}_math", {"targets": 64}, batch_size=8)
  host0, _ = _first_batches(config, 2, seed=0, shard_info=seqio.ShardInfo(0, 2))
  host1, _ = _first_batches(config, 2, seed=0, shard_info=seqio.ShardInfo(1, 2))
  assert host0[0]["decoder_target_tokens"].shape == (4, 64)
  rows0 = {r.tobytes() for b in host0 for r in b["decoder_target_tokens"]}
  rows1 = {r.tobytes() for b in host1 for r in b["decoder_target_tokens"]}
  assert not rows0 & rows1


def test_unknown_task_error_lists_registered_names():
  with pytest.raises(ValueError, match="mixjax_synthetic_mix"):
    lm_tasks.task_names("mixjax_synthetic_typo")
  with pytest.raises(ValueError, match="register"):
    lm_tasks.get("mixjax_synthetic_typo")


def test_jsonl_task_reads_files_and_names_bad_lines(tmp_path):
  name = helpers.register_word_task(tmp_path, name="test_jsonl_words")
  ds = seqio.get_mixture_or_task(name).get_dataset({"targets": 64}, split="train", shuffle=False)
  assert len(list(ds.take(5))) == 5
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"text": "fine"}) + "\n" + '{"body": "no text field"}\n')
  with pytest.raises(lm_tasks.JsonlFormatError, match=r"bad.jsonl:2.*'text'"):
    list(lm_tasks.read_jsonl_texts([str(bad)]))
  bad.write_bytes(b'{"text": "ok"}\n\xff\xfe not utf8\n')
  with pytest.raises(lm_tasks.JsonlFormatError, match=r"bad.jsonl:2: not valid UTF-8 JSON"):
    list(lm_tasks.read_jsonl_texts([str(bad)]))
  with pytest.raises(FileNotFoundError, match="no files match"):
    lm_tasks.register_jsonl_task("test_missing", {"train": [str(tmp_path / "nope*.jsonl")]})


@pytest.mark.parametrize("task_name", ["mixjax_c4", "mixjax_wikipedia"])
def test_tfds_corpora_load_offline_with_mock_data(task_name):
  with tfds.testing.mock_data(num_examples=64):
    ds = seqio.get_dataset(task_name, {"targets": 64},
                           feature_converter=seqio.DecoderFeatureConverter(pack=True),
                           dataset_split="train", shuffle=False, verbose=False)
    batch = next(ds.batch(2).as_numpy_iterator())
  assert batch["decoder_target_tokens"].shape == (2, 64)
  assert (batch["decoder_target_tokens"] > 0).any()


def test_an_empty_virtual_shard_is_a_clear_error_not_a_hang(tmp_path):
  name = helpers.register_word_task(tmp_path, name="test_one_document")
  (tmp_path / "train.jsonl").write_text(json.dumps({"text": "one lonely document"}) + "\n")
  config = pipeline.DataConfig(name, {"targets": 32}, batch_size=8)  # 2 shards: one is empty
  it = stream.make_batch_iterator(config, 0, None, 4)
  with pytest.raises(ValueError, match=r"virtual data shard 1: .*num_shards"):
    next(it)


def _documents(batch, vocabulary):
  """The documents (text) packed into a batch's rows, split by segment id."""
  docs = []
  for tokens, segments in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"]):
    for s in np.unique(segments[segments > 0]):
      ids = [int(t) for t in tokens[segments == s] if t != vocabulary.eos_id]
      docs.append(vocabulary.decode(ids))
  return sorted(docs)


def test_eval_batches_are_read_by_host_from_virtual_shards(tmp_path):
  texts = [f"document {i}" for i in range(8)]  # 10 bytes + EOS: 2 per 32-token row
  for split in ("train", "validation"):
    (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  name = "test_eval_shards"
  lm_tasks.register_jsonl_task(name, {s: [str(tmp_path / f"{s}.jsonl")] for s in
                                      ("train", "validation")})
  config = pipeline.DataConfig(name, {"targets": 32}, batch_size=8)
  whole = pipeline.host_eval_batches(config, name, 8, num_batches=4, host_rows=slice(0, 8))
  # 2 shards of 4 rows: shard v packs documents v, v + 2, ... into 2 rows, then zero rows; the
  # batches past the data (num_batches asks for 4) are left out.
  assert len(whole) == 1 and whole[0]["decoder_target_tokens"].shape == (8, 32)
  vocabulary = config.vocabulary
  for v, rows in enumerate([slice(0, 4), slice(4, 8)]):
    shard = {k: x[rows] for k, x in whole[0].items()}
    assert _documents(shard, vocabulary) == sorted(texts[v::2])
    assert not shard["decoder_target_tokens"][2:].any()  # the shard ran out: no loss weight
    assert not shard["decoder_loss_weights"][2:].any()
    # A host reads only its own shard, and gets the same rows.
    half = pipeline.host_eval_batches(config, name, 8, num_batches=4, host_rows=rows)
    assert len(half) == 1
    for k in whole[0]:
      np.testing.assert_array_equal(half[0][k], whole[0][k][rows])
  # Four hosts of two rows: more shards than the batch size gives by default, so that each host
  # holds whole ones; then every row is its own shard's.
  assert pipeline.eval_num_shards(8, slice(2, 4)) == 4
  quarter = pipeline.host_eval_batches(config, name, 8, num_batches=4, host_rows=slice(2, 4))
  assert _documents(quarter[0], vocabulary) == sorted(texts[1::4])
  # num_batches caps the rows read.
  first = pipeline.host_eval_batches(config, name, 4, num_batches=1, host_rows=slice(0, 4))
  assert len(first) == 1 and first[0]["decoder_target_tokens"].shape == (4, 32)
