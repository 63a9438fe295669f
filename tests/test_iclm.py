"""Tests for In-Context Pretraining ordering: the CLI end to end on the embedded corpus, resume,
multi-worker runs, bad input, the SeqIO task, and the graph, embedding and neighbour parts."""

import ast
import collections
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mixjax.iclm import cli
from mixjax.iclm import embed
from mixjax.iclm import io as iclm_io
from mixjax.iclm import knn
from mixjax.iclm import order
from mixjax.iclm import stages
from mixjax.testbed import corpus as synthetic

NUM_DOCS = 2000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
  out = tmp_path_factory.mktemp("corpus")
  synthetic.write_corpus(out, synthetic.CorpusConfig(num_docs=NUM_DOCS, seed=0))
  return sorted(glob.glob(str(out / "train" / "*.jsonl")))


def _read_jsonl(paths) -> list[dict]:
  return [json.loads(line) for p in paths for line in open(p, "rb")]


def _outputs(out_dir) -> list[dict]:
  return _read_jsonl(sorted(glob.glob(os.path.join(out_dir, stages.OUTPUT_GLOB))))


def _config(inputs, out_dir, **kw) -> stages.IclmConfig:
  kw = {"shard_lines": 700, "output_shard_docs": 600, "progress": False, **kw}
  return stages.IclmConfig(inputs=tuple(map(str, inputs)), output_dir=str(out_dir), **kw)


@pytest.fixture(scope="module")
def ordered(corpus, tmp_path_factory) -> str:
  """The CLI's output on the embedded corpus."""
  out = tmp_path_factory.mktemp("iclm")
  assert cli.main(["--input", ",".join(corpus), "--output", str(out), "--shard_lines",
                        "700", "--output_shard_docs", "600", "--context_tokens", "1024",
                        "--no_progress"]) == 0
  return str(out)


def test_cli_keeps_every_document_once_with_all_fields(corpus, ordered):
  inputs, outputs = _read_jsonl(corpus), _outputs(ordered)
  assert sorted(r["id"] for r in outputs) == sorted(r["id"] for r in inputs)
  by_id = {r["id"]: r for r in inputs}
  assert all({k: v for k, v in r.items() if k != "context"} == by_id[r["id"]] for r in outputs)
  contexts = np.array([r["context"] for r in outputs])
  assert contexts[0] == 0 and set(np.diff(contexts)) <= {0, 1}  # contiguous, in order
  assert len(glob.glob(os.path.join(ordered, stages.OUTPUT_GLOB))) > 1


def test_related_bios_land_next_to_each_other(corpus, ordered):
  def related_rate(records):
    pairs = [(a, b) for a, b in zip(records, records[1:]) if a["domain"] == b["domain"] == "bios"]
    hits = sum(b["person"] == a["person"] or b["person"] in a["related_people"] for a, b in pairs)
    return hits / sum(r["domain"] == "bios" for r in records)

  outputs = _outputs(ordered)
  shuffled = [outputs[i] for i in np.random.default_rng(0).permutation(len(outputs))]
  assert related_rate(outputs) > 0.5 > 20 * related_rate(shuffled)
  report = json.load(open(os.path.join(ordered, stages.REPORT)))
  assert report["adjacent_similarity"] > 5 * report["random_order_similarity"]
  assert report["documents"] == len(outputs) and report["skipped"]["total"] == 0


def test_same_seed_same_order_and_resume_after_crash(corpus, ordered, tmp_path, monkeypatch):
  calls = []
  real_search = stages.search_shard

  def crash_on_second_shard(wd, docs, index, shard):
    calls.append(shard)
    if len(calls) == 2:
      raise RuntimeError("simulated crash")
    real_search(wd, docs, index, shard)

  config = _config(corpus, tmp_path, context_tokens=1024)
  monkeypatch.setattr(stages, "search_shard", crash_on_second_shard)
  with pytest.raises(RuntimeError, match="simulated"):
    stages.run(config)
  embedded = sorted(glob.glob(str(tmp_path / "stages" / "embed" / "shard-*.npz")))
  mtimes = [os.stat(p).st_mtime_ns for p in embedded]
  stages.run(config)  # resumes: the first knn shard and every embed shard are not redone
  assert calls == [0, 1, 1, 2]
  assert [os.stat(p).st_mtime_ns for p in embedded] == mtimes
  assert [r["id"] for r in _outputs(tmp_path)] == [r["id"] for r in _outputs(ordered)]


def test_other_seed_other_order(corpus, ordered, tmp_path):
  stages.run(_config(corpus, tmp_path, context_tokens=1024, seed=1))
  assert [r["id"] for r in _outputs(tmp_path)] != [r["id"] for r in _outputs(ordered)]


def test_workers_split_shards_and_match_one_machine(corpus, ordered, tmp_path):
  config = _config(corpus, tmp_path, context_tokens=1024)
  with pytest.raises(stages.StagePending, match="embed: 2 of 3 shards"):
    stages.run(config, worker=stages.Worker(0, 2))
  with pytest.raises(stages.StagePending, match="knn: 1 of 3 shards"):
    stages.run(config, worker=stages.Worker(1, 2))
  with pytest.raises(stages.StagePending, match="write: 2 of 4 shards"):
    stages.run(config, worker=stages.Worker(0, 2))
  assert stages.run(config, worker=stages.Worker(1, 2))["documents"] == len(_outputs(ordered))
  assert [r["id"] for r in _outputs(tmp_path)] == [r["id"] for r in _outputs(ordered)]


def test_beam_pipeline_writes_what_the_local_run_writes(corpus, tmp_path):
  # Apache Beam is the optional [beam] extra (it pins protobuf < 7, which TensorFlow 2.21 cannot
  # use), so this is the one test that skips without it; run it in a venv with the extra.
  pytest.importorskip("apache_beam")
  from mixjax.iclm import beam  # pylint: disable=g-import-not-at-top

  spec = knn.IndexSpec(kind="ivf", nlist=16, nprobe=4)
  local = stages.run(_config(corpus, tmp_path / "local", index=spec))
  piped = beam.run(_config(corpus, tmp_path / "beam", index=spec), ["--runner=DirectRunner"])
  assert _outputs(tmp_path / "beam") == _outputs(tmp_path / "local")
  assert piped["adjacent_similarity"] == local["adjacent_similarity"]


def test_rerun_with_other_settings_is_refused(corpus, ordered):
  with pytest.raises(ValueError, match="k differ.*--restart"):
    stages.run(_config(corpus, ordered, context_tokens=1024, k=5))


def _ids(out_dir) -> list[str]:
  return [r["id"] for r in _outputs(out_dir)]


@pytest.fixture(scope="module")
def shuffled(corpus, tmp_path_factory) -> str:
  """The CLI's random-order baseline on the same corpus and settings as `ordered`."""
  out = tmp_path_factory.mktemp("random")
  assert cli.main(["--input", ",".join(corpus), "--output", str(out), "--shard_lines",
                        "700", "--output_shard_docs", "600", "--context_tokens", "1024",
                        "--order", "random", "--no_progress"]) == 0
  return str(out)


def test_random_order_keeps_every_document_once_and_cuts_contexts_the_same_way(
    corpus, ordered, shuffled):
  inputs, outputs = _read_jsonl(corpus), _outputs(shuffled)
  assert sorted(r["id"] for r in outputs) == sorted(r["id"] for r in inputs)
  assert _ids(shuffled) != _ids(ordered)
  by_id = {r["id"]: r for r in inputs}
  assert all({k: v for k, v in r.items() if k != "context"} == by_id[r["id"]] for r in outputs)
  tokens = collections.Counter()
  for r in outputs:
    tokens[r["context"]] += len(r["text"].encode()) + 1
  assert sorted(tokens) == list(range(len(tokens)))
  assert max(tokens.values()) <= 1024  # no document of this corpus is longer than a context
  report, iclm_report = (iclm_io.load_json(os.path.join(d, stages.REPORT))
                         for d in (shuffled, ordered))
  assert (report["order"], iclm_report["order"]) == ("random", "iclm")
  assert report["contexts"] == len(tokens) and report["index"] is None
  assert report["adjacent_similarity"] < 0.1 and iclm_report["adjacent_similarity"] > 0.4
  assert not iclm_io.is_done(os.path.join(shuffled, "stages", "knn"))  # no neighbour search


def test_random_order_is_seeded(corpus, shuffled, tmp_path):
  stages.run(_config(corpus, tmp_path / "same", context_tokens=1024, order="random"))
  stages.run(_config(corpus, tmp_path / "other", context_tokens=1024, order="random", seed=1))
  assert _ids(tmp_path / "same") == _ids(shuffled) != _ids(tmp_path / "other")
  permutation = order.random_order(50, seed=4)
  assert sorted(permutation) == list(range(50))
  assert np.array_equal(permutation, order.random_order(50, seed=4))


def test_random_order_skips_the_neighbour_stages():
  config = _config(["in.jsonl"], "out", order="random")
  assert stages.plan(config) == ("scan", "fit", "embed", "docs", "order", "write")
  assert stages.plan(config, until="knn") == ("scan", "fit", "embed", "docs")
  assert stages.plan(_config(["in.jsonl"], "out")) == stages.STAGES
  with pytest.raises(ValueError, match="Unknown stage 'sort'; valid: scan, fit"):
    stages.plan(config, until="sort")


def test_beam_random_order_writes_the_local_baseline_without_neighbours(corpus, shuffled,
                                                                         tmp_path):
  pytest.importorskip("apache_beam")  # the [beam] extra, as in the test above
  from mixjax.iclm import beam  # pylint: disable=g-import-not-at-top

  beam.run(_config(corpus, tmp_path, context_tokens=1024, order="random"),
           ["--runner=DirectRunner"])
  assert _outputs(tmp_path) == _outputs(shuffled)
  assert not os.path.exists(tmp_path / "stages" / "index")
  assert not os.path.exists(tmp_path / "stages" / "knn")


def test_rerun_with_other_order_is_refused_unless_restarted(corpus, ordered, tmp_path):
  with pytest.raises(ValueError, match="order differ.*--restart"):
    stages.run(_config(corpus, ordered, context_tokens=1024, order="random"))
  config = _config(corpus, tmp_path, k=5)
  assert stages.run(config)["order"] == "iclm"
  random_config = _config(corpus, tmp_path, k=5, order="random")
  assert stages.run(random_config, restart=True)["order"] == "random"
  with pytest.raises(ValueError, match="Unknown order 'sorted'; valid: iclm, random"):
    _config(corpus, tmp_path, order="sorted")


# ------------------------------------------------------------------------ embedder registry


def test_unknown_embedder_is_refused_before_anything_is_written(tmp_path):
  config = _config([tmp_path / "in.jsonl"], tmp_path / "out", embedder="contriever")
  with pytest.raises(ValueError, match=r"Unknown embedder 'contriever'; registered: .*hashed.*"
                                       r"mixjax\.inference\.embedder.*register_embedder"):
    stages.run(config)
  assert not os.path.exists(tmp_path / "out")


def test_checkpoint_embedder_registers_from_the_inference_layer(tmp_path):
  # A fresh interpreter: the stages alone do not know `checkpoint` and say what to import; the
  # CLI (which imports mixjax.inference.embedder) offers it.
  code = """if True:
    import sys
    from mixjax.iclm import stages
    config = stages.IclmConfig(inputs=("in.jsonl",), output_dir=sys.argv[1], embedder="checkpoint")
    try:
      stages.run(config)
    except ValueError as e:
      print(e)
    assert not any(m.startswith(("mixjax.inference", "mixjax.models")) for m in sys.modules)
    from mixjax.iclm import cli
    print(sorted(stages.EMBEDDERS))
  """
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], check=True,
                       capture_output=True, text=True).stdout.splitlines()
  assert out[0] == ("Unknown embedder 'checkpoint'; registered: hashed, sentence_transformers. "
                    "`import mixjax.inference.embedder` registers `checkpoint` (the CLI imports "
                    "it); register your own with mixjax.iclm.stages.register_embedder.")
  assert out[1] == "['checkpoint', 'hashed', 'sentence_transformers']"


def test_embedders_that_read_a_path_refuse_to_run_without_one(tmp_path):
  for name in ("checkpoint", "sentence_transformers"):
    with pytest.raises(ValueError, match=f"--embedder {name} needs --embedder_path: "):
      stages.run(_config([tmp_path / "in.jsonl"], tmp_path / "out", embedder=name))
  args = cli.parse_args(["--input", "in.jsonl", "--output", "out", "--embedder", "checkpoint",
                         "--embedder_path", "/runs/a"])
  embedder = stages.make_embedder(cli.config_from_args(args))
  assert (type(embedder).__module__, embedder.model_dir) == ("mixjax.inference.embedder", "/runs/a")


def test_an_embedder_name_registers_once():
  with pytest.raises(ValueError, match="'hashed' is already registered .*mixjax.iclm.stages"):
    stages.register_embedder("hashed", lambda config: embed.HashedTfidfEmbedder())


# ------------------------------------------------------------------------ bad input


def _write_lines(path, lines: list[bytes]) -> str:
  path.write_bytes(b"\n".join(lines) + b"\n")
  return str(path)


def _good(i: int) -> bytes:
  return json.dumps({"id": f"d{i}", "text": f"document {i} about topic {i % 7}"}).encode()


BAD_LINES = {
    b"\xff\xfe not utf-8": "not valid UTF-8",
    b'{"id": "x", "txt": "no text"}': "missing 'text' field",
    b'{"id": "y", "text": 3}': "'text' is a int",
    b"[1, 2]": "not a JSON object",
    b'{"text": "a", ': "not valid JSON",
    b'{"text": "a", "context": 1}': "already has a 'context' field",
}


@pytest.mark.parametrize("bad,message", BAD_LINES.items())
def test_bad_line_is_a_clear_error_naming_it(tmp_path, bad, message):
  path = _write_lines(tmp_path / "in.jsonl", [_good(0), _good(1), bad, _good(3)])
  with pytest.raises(ValueError, match=f"(?s)1 bad input line.*in.jsonl:3: {message}.*"
                                       f"--skip_bad_records"):
    stages.run(_config([path], tmp_path / "out"))


def test_bad_lines_skipped_are_counted_and_empty_lines_never_fail(tmp_path):
  lines = [_good(i) for i in range(40)] + [b"", b"   "] + list(BAD_LINES) + [_good(5)]
  path = _write_lines(tmp_path / "in.jsonl", lines)
  report = stages.run(_config([path], tmp_path / "out", skip_bad_records=True, k=5))
  skipped = report["skipped"]
  assert skipped["total"] == 2 + len(BAD_LINES) + 1  # empty, bad, repeated id
  assert skipped["by_reason"]["empty line"] == 2
  assert skipped["by_reason"]["duplicate id"] == 1
  assert sum(skipped["by_reason"].values()) == skipped["total"]
  assert report["documents"] == 40
  assert sorted(r["id"] for r in _outputs(tmp_path / "out")) == sorted(f"d{i}" for i in range(40))
  assert any("in.jsonl:43: not valid UTF-8" in e for e in skipped["examples"])


def test_no_usable_line_gives_an_empty_output_and_report(tmp_path):
  path = _write_lines(tmp_path / "in.jsonl", [b"", b'{"id": 1}'])
  report = stages.run(_config([path], tmp_path / "out", skip_bad_records=True))
  assert report["documents"] == 0 and report["skipped"]["total"] == 2
  assert report["adjacent_similarity"] is None and _outputs(tmp_path / "out") == []


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
  path = _write_lines(tmp_path / "in.jsonl", [_good(i) for i in range(10)] + [_good(4)])
  with pytest.raises(ValueError, match=r'(?s)id "d4" at .*in.jsonl:5 and .*in.jsonl:11'):
    stages.run(_config([path], tmp_path / "out", k=3))


def test_missing_input_file_is_named(tmp_path):
  assert cli.main(["--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path),
                        "--no_progress"]) == 2
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    stages.run(_config([tmp_path / "nope.jsonl"], tmp_path / "out"))


def test_near_duplicates_dropped_are_written_aside(tmp_path):
  lines = [_good(i) for i in range(30)] + [json.dumps(
      {"id": "copy", "text": "document 3 about topic 3"}).encode()]
  path = _write_lines(tmp_path / "in.jsonl", lines)
  report = stages.run(_config([path], tmp_path / "out", k=5, dedup_threshold=0.99))
  dropped = _read_jsonl([tmp_path / "out" / stages.NEAR_DUPLICATES])
  assert report["near_duplicates"] == len(dropped) == 1
  assert dropped[0]["id"] in ("d3", "copy") and dropped[0]["duplicate_of"].endswith(
      ":4" if dropped[0]["id"] == "copy" else ":31")
  assert len(_outputs(tmp_path / "out")) == 30


# ------------------------------------------------------------------------ SeqIO task


def test_seqio_task_keeps_context_order_and_shuffles_contexts(ordered):
  import seqio  # pylint: disable=g-import-not-at-top  (TensorFlow: only this test needs it)
  from mixjax.iclm import task  # pylint: disable=g-import-not-at-top
  from mixjax import vocab  # pylint: disable=g-import-not-at-top

  task.register_iclm_task("iclm_test_task", ordered)
  dataset = seqio.get_mixture_or_task("iclm_test_task").get_dataset(
      {"targets": 1024}, split="train", shuffle=True, seed=3)
  contexts = {}
  for r in _outputs(ordered):
    contexts.setdefault(r["context"], []).append(r["text"])
  context_of = {tuple(texts): c for c, texts in contexts.items()}
  vocabulary = vocab.get_vocabulary()
  seen = []
  for example in dataset.take(8).as_numpy_iterator():
    targets = example["targets"]
    assert targets[-1] == vocabulary.eos_id
    docs = np.split(targets[:-1], np.flatnonzero(targets[:-1] == vocabulary.eos_id))
    texts = [vocabulary.decode(d[d != vocabulary.eos_id].tolist()) for d in docs]
    seen.append(context_of[tuple(texts)])  # exactly one context's documents, in their order
  assert seen != sorted(seen)  # whole contexts come shuffled


# ------------------------------------------------------------------------ parts


def _random_knn(n, k, seed=0):
  rng = np.random.default_rng(seed)
  emb = rng.standard_normal((n, 16)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  index = knn.empty_index(knn.IndexSpec(kind="flat").resolve(n), emb, 0)
  knn.add(index, emb, 0)
  return emb, *knn.search(index, emb, np.arange(n), k)


def test_neighbours_are_exact_for_flat_and_exclude_self():
  emb, nbr, sim = _random_knn(300, 5)
  sims = emb @ emb.T
  np.fill_diagonal(sims, -np.inf)
  np.testing.assert_array_equal(nbr, np.argsort(-sims, axis=1)[:, :5])
  np.testing.assert_allclose(sim, np.sort(sims, axis=1)[:, ::-1][:, :5], rtol=1e-5)


@pytest.mark.parametrize("kind,hnsw_lists", [("ivf", 10**6), ("ivf", 8), ("ivfpq", 10**6)])
def test_index_built_from_merged_shards_matches_one_build(kind, hnsw_lists):
  emb, _, _ = _random_knn(3000, 1)
  spec = knn.IndexSpec(kind=kind, nlist=8, nprobe=8, pq_bytes=4,
                            hnsw_quantizer_lists=hnsw_lists).resolve(len(emb))
  trained = knn.empty_index(spec, emb, 0)
  whole = knn.copy(trained)
  knn.add(whole, emb, 0)
  parts = [knn.copy(trained) for _ in range(3)]
  for i, part in enumerate(parts):  # as the pipeline adds: into lists found once, kept for search
    rows = emb[i * 1000:(i + 1) * 1000]
    knn.add(part, rows, i * 1000, knn.coarse(part, rows))
  merged = knn.merge(parts)
  q = np.arange(0, 3000, 97)
  np.testing.assert_array_equal(knn.search(whole, emb[q], q, 4)[0],
                                knn.search(merged, emb[q], q, 4,
                                                knn.coarse(merged, emb[q]))[0])


def test_graph_rows_are_symmetric_and_most_similar_first():
  _, nbr, sim = _random_knn(200, 4)
  graph = order.neighbour_graph(nbr, sim)
  rows = [graph.col_E[graph.indptr_N1[i]:graph.indptr_N1[i + 1]] for i in range(200)]
  for i in range(200):
    assert len(set(rows[i])) == len(rows[i])
    assert all(i in rows[j] for j in rows[i])
    assert list(rows[i][:4]) == list(nbr[i])  # own top-k outranks anyone's reverse edge


def test_greedy_paths_visit_everything_once_stepping_to_the_best_unvisited():
  emb, nbr, sim = _random_knn(500, 6)
  order_N, path_start = order.greedy_paths(order.neighbour_graph(nbr, sim), seed=0)
  assert sorted(order_N) == list(range(500))
  graph = order.neighbour_graph(nbr, sim)
  visited = set()
  ends = set(path_start.tolist()) | {len(order_N)}
  for pos, u in enumerate(order_N.tolist()):
    visited.add(u)
    row = graph.col_E[graph.indptr_N1[u]:graph.indptr_N1[u + 1]].tolist()
    unvisited = [v for v in row if v not in visited]
    if pos + 1 in ends:
      assert not unvisited  # a path ends only when every neighbour is taken
    else:
      assert order_N[pos + 1] == unvisited[0]
  assert order.adjacent_similarity(emb, order_N) > 3 * abs(
      order.adjacent_similarity(emb, np.random.default_rng(0).permutation(500)))


def test_short_paths_move_next_to_their_best_neighbour():
  # Path [0 1 2 3 4 5] and a short path [6]; 6's nearest neighbour in a long path is 2.
  order_N, starts = np.arange(7), np.array([0, 6])
  nbr = np.array([[1], [2], [3], [4], [5], [4], [2]])
  sim = np.ones_like(nbr, np.float32)
  merged, stats = order.merge_short_paths(order_N, starts, nbr, sim, min_docs=2)
  assert merged.tolist() == [0, 1, 2, 6, 3, 4, 5]
  assert stats["merged_paths"] == 1 and stats["unmerged_short_paths"] == 0
  # A short path [5 6] anchored at its last document is turned to start there.
  nbr2 = np.array([[1], [2], [3], [4], [3], [6], [1]])
  merged2, _ = order.merge_short_paths(np.arange(7), np.array([0, 5]), nbr2, sim, 3)
  assert merged2.tolist() == [0, 1, 6, 5, 2, 3, 4]


def test_public_greedy_baseline_is_a_permutation_and_beats_random():
  emb, nbr, _ = _random_knn(1000, 10)
  order_N = order.public_greedy_order(nbr, seed=0)
  assert sorted(order_N) == list(range(1000))
  assert order.adjacent_similarity(emb, order_N) > 0.3


def test_contexts_fill_the_budget_without_overflow():
  tokens = np.array([300, 300, 300, 2000, 10, 500, 600])
  assert order.assign_contexts(tokens, 1000).tolist() == [0, 0, 0, 1, 2, 2, 3]


def test_hashed_embedder_is_deterministic_and_finds_shared_words():
  texts = ["Ada Lovelace works at Babbage Engines in London.", "",
           "Ada Lovelace and Charles Babbage work together at Babbage Engines.",
           "The quarterly rainfall in Lima was low.", "ümlaut wörds stay whole"]
  embedder = embed.HashedTfidfEmbedder(dim=256)
  emb = embedder.embed(texts, embedder.fit(texts))
  np.testing.assert_array_equal(emb, embedder.embed(texts, embedder.fit(texts)))
  np.testing.assert_allclose(np.linalg.norm(emb[[0, 2, 3, 4]], axis=1), 1, rtol=1e-5)
  assert not emb[1].any()
  assert emb[0] @ emb[2] > 0.25 and abs(emb[0] @ emb[3]) < 0.1


def test_mean_pooled_lm_embedder_pools_over_real_tokens_only():
  width = 8
  hidden = lambda tokens, mask: np.eye(width)[tokens % width] * mask[..., None]
  embedder = embed.MeanPooledLMEmbedder(hidden, max_tokens=4, batch_size=2)
  emb = embedder.embed(["aaaa", "aaaaaaaa", "ab"], {})
  np.testing.assert_allclose(emb[0], emb[1])  # truncated to max_tokens
  assert emb.shape == (3, width) and emb[2] @ emb[0] < 1


def test_checkpoint_embedder_pools_a_decoders_final_hidden_states():
  # pylint: disable=g-import-not-at-top  (JAX and the model: only this test needs them)
  import jax
  from mixjax.inference import embedder as checkpoint_embedder
  from mixjax.models import transformer

  config = transformer.TransformerConfig(vocab_size=640, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                         head_dim=16, mlp_dim=64)
  model = transformer.build_model(config)
  params = model.init(jax.random.key(0), np.zeros((1, 8), np.int32))["params"]
  embedder = embed.MeanPooledLMEmbedder(checkpoint_embedder.decoder_hidden_fn(model, params))
  emb = embedder.embed(["a short one", "a much longer document " * 20, "a short one"], {})
  assert emb.shape == (3, 32)
  np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
  np.testing.assert_allclose(emb[0], embedder.embed(["a short one"], {})[0], atol=1e-5)


_MODEL_LAYERS = ("mixjax.models", "mixjax.training", "mixjax.eval", "mixjax.inference")


def _imported_modules(tree: ast.AST) -> list[str]:
  names = []
  for node in ast.walk(tree):  # every import, at module level or inside a function
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
  return names


def test_iclm_imports_no_model_side_layer():
  # vocab <- data <- iclm; models, training, eval and inference sit above. Only the binaries
  # (cli.py, __main__.py) may import them, e.g. to register the checkpoint embedder.
  package = os.path.dirname(stages.__file__)
  checked, upward = [], []
  for path in sorted(glob.glob(os.path.join(package, "*.py"))):
    if os.path.basename(path) in ("cli.py", "__main__.py"):
      continue
    checked.append(os.path.basename(path))
    with open(path, encoding="utf-8") as f:
      names = _imported_modules(ast.parse(f.read(), path))
    upward += [f"{os.path.basename(path)}: {n}" for n in names
               if n in _MODEL_LAYERS or n.startswith(tuple(m + "." for m in _MODEL_LAYERS))]
  assert "stages.py" in checked and "probes.py" in checked
  assert not upward, f"mixjax/iclm imports a layer above it: {upward}"


def test_line_index_handles_missing_final_newline_and_empty_files(tmp_path):
  (tmp_path / "a").write_bytes(b'{"text": "x"}\n\n{"text": "y"}')
  (tmp_path / "b").write_bytes(b"")
  index = iclm_io.scan_lines([str(tmp_path / "a"), str(tmp_path / "b")])
  assert list(iclm_io.LineReader(index).lines(np.arange(3))) == [b'{"text": "x"}', b"",
                                                                  b'{"text": "y"}']
  assert index.where(2).endswith("a:3")
  assert iclm_io.with_context(b'{"text": "y"} ', 7) == b'{"text": "y", "context": 7}\n'


def test_context_shuffle_is_global_and_seeded(tmp_path):
  """One big shard whose first half is one domain: the shuffled stream mixes from the start."""
  from mixjax.iclm import task  # pylint: disable=g-import-not-at-top

  path = tmp_path / "iclm-00000-of-00001.jsonl"
  with open(path, "w") as f:
    for context in range(200):
      for j in range(1 + context % 3):  # contexts of 1-3 documents, kept in order
        domain = "math" if context < 100 else "prose"
        f.write(json.dumps({"id": f"{context}-{j}", "text": f"{domain} {context} {j}",
                            "domain": domain, "context": context}) + "\n")
  first = list(task.read_contexts_shuffled([str(path)], seed=1))
  assert sorted(c for c, _ in first) == list(range(200))  # every context once
  for c, texts in first:
    assert texts == [f"{'math' if c < 100 else 'prose'} {c} {j}" for j in range(1 + c % 3)]
  head = [c < 100 for c, _ in first[:40]]
  assert 10 < sum(head) < 30  # both halves within the first 40 contexts
  assert first == list(task.read_contexts_shuffled([str(path)], seed=1))
  assert first != list(task.read_contexts_shuffled([str(path)], seed=2))
  assert list(task.read_contexts([str(path)])) == sorted(first)
