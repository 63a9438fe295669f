"""In-Context Pretraining document ordering (Shi et al., 2024) as resumable, sharded stages.

`run(config)` reorders JSONL documents so that each training context holds related documents:

  stage   writes (under DIR/stages/<stage>/)                 sharded
  scan    lines.npz: where every input line is                  -
  fit     state.npz: embedder statistics (hashed: IDF)          -
  embed   shard-*.npz: parsed, validated, embedded lines        by input lines
  docs    docs.npz, skipped.*: documents kept, lines skipped    -
  index   index.faiss (+ coarse-*.npz: each shard's IVF lists)  - (Beam: by shard, then merged)
  knn     shard-*.npz: k nearest neighbours per document        as embed
  order   order.npz: greedy paths, merged, into contexts        -
          (`order="random"`: a seeded permutation instead; index and knn are skipped)
  write   DIR/iclm-*-of-*.jsonl, DIR/report.json               by contexts

Each stage is complete once `_DONE` is in its directory, and each shard file appears atomically, so
a rerun skips what is done and resumes the rest. Sharded stages can be split over machines
(`worker=(i, n)` takes every n-th shard; run the single-step stages on one of them, e.g. with
`until`, or each worker that gets there repeats them); `mixjax.iclm.beam` runs fit..knn as a
Beam pipeline.
Documents are numbered in input order after dropping skipped lines; that number is what the
embedding, neighbour and order files index.
"""

import collections
import dataclasses
import functools
import json
import os
import shutil
from typing import Callable, Sequence

import numpy as np
import tqdm

# `_lib`: the stages themselves are called embed, knn and order.
from mixjax.iclm import embed as embed_lib
from mixjax.iclm import io as iclm_io
from mixjax.iclm import knn as knn_lib
from mixjax.iclm import order as order_lib

STAGES = ("scan", "fit", "embed", "docs", "index", "knn", "order", "write")
# "iclm": the greedy walk over the neighbour graph. "random": a seeded permutation, cut into
# contexts and written by the same code, as the baseline that differs only in the order.
ORDERS = ("iclm", "random")
OUTPUT_PREFIX = "iclm"
OUTPUT_GLOB = f"{OUTPUT_PREFIX}-?????-of-?????.jsonl"
REPORT = "report.json"
NEAR_DUPLICATES = "near_duplicates.jsonl"
_MAX_EXAMPLES = 20  # bad lines quoted in errors and the report


@dataclasses.dataclass(frozen=True)
class IclmConfig:
  """Everything that decides the output. `threads` and `progress` only change how fast/loud."""
  inputs: tuple[str, ...]
  output_dir: str
  embedder: str = "hashed"          # a key of EMBEDDERS (checked when the run starts)
  embedder_path: str = ""           # sentence_transformers: model dir; checkpoint: MODEL_DIR
  dim: int = 128                    # hashed embedder width
  fit_docs: int = 100_000           # sample the embedder statistics are fitted on
  k: int = 20                       # neighbours per document
  index: knn_lib.IndexSpec = knn_lib.IndexSpec()
  min_path_docs: int = 4            # paths shorter than this are merged next to a neighbour
  context_tokens: int = 8192        # byte-vocabulary tokens per context (UTF-8 bytes + EOS)
  order: str = "iclm"               # a value of ORDERS
  dedup_threshold: float | None = None  # drop a document this similar to the one before it
  shard_lines: int = 1 << 16        # input lines per embed shard; documents per knn shard
  output_shard_docs: int = 100_000  # roughly; shards hold whole contexts
  skip_bad_records: bool = False    # count and skip bad lines instead of stopping
  seed: int = 0
  threads: int = 2
  progress: bool = True

  def __post_init__(self):
    if not self.inputs:
      raise ValueError("No input files: pass --input DOCS.jsonl[,MORE.jsonl].")
    if self.order not in ORDERS:
      raise ValueError(f"Unknown order {self.order!r}; valid: {', '.join(ORDERS)}.")
    if self.k < 1 or self.min_path_docs < 1 or self.context_tokens < 1 or self.shard_lines < 1:
      raise ValueError("k, min_path_docs, context_tokens and shard_lines must be positive.")

  def fingerprint(self) -> dict:
    """What a rerun in the same directory must share with the first run."""
    fields = dataclasses.asdict(self)
    for key in ("output_dir", "threads", "progress"):
      fields.pop(key)
    # Every input counts (a missing one raises here): a fingerprint without it would refuse the
    # corrected rerun.
    check_inputs(self.inputs)
    fields["inputs"] = [[os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns]
                        for p in self.inputs]
    return json.loads(json.dumps(fields))


def check_inputs(paths: Sequence[str]) -> None:
  """Raises FileNotFoundError naming every input that is not a file."""
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"Input file(s) not found: {', '.join(missing)}. Pass existing JSONL "
                            "files, comma-separated (globs ok).")


@dataclasses.dataclass(frozen=True)
class EmbedderSpec:
  """A registered embedder: how to build it from a config, and what `embedder_path` names."""
  name: str
  factory: Callable[[IclmConfig], embed_lib.Embedder]
  path: str = ""  # what `embedder_path` must name for this embedder; "" when it reads no path

  def build(self, config: IclmConfig) -> embed_lib.Embedder:
    """Returns the embedder for `config`; raises ValueError if a path it needs is missing."""
    if self.path and not config.embedder_path:
      raise ValueError(f"--embedder {self.name} needs --embedder_path: {self.path}.")
    return self.factory(config)


# Name -> spec, filled by `register_embedder`: here for the embedders of this package, and by the
# modules of higher layers that define others (`mixjax.inference.embedder`: `checkpoint`).
EMBEDDERS: dict[str, EmbedderSpec] = {}
# Where the embedders that this package cannot import live, for the error on an unknown name.
_ELSEWHERE = "`import mixjax.inference.embedder` registers `checkpoint` (the CLI imports it)"


def register_embedder(name: str, factory: Callable[[IclmConfig], embed_lib.Embedder], *,
                      path: str = "") -> EmbedderSpec:
  """Makes `name` a valid `IclmConfig.embedder` (and `--embedder` choice), built by
  `factory(config)`; `path` says what `embedder_path` must name, if it is needed. Returns the spec.
  """
  if name in EMBEDDERS:
    raise ValueError(f"Embedder {name!r} is already registered (by "
                     f"{EMBEDDERS[name].factory.__module__}); pick another name.")
  EMBEDDERS[name] = EmbedderSpec(name, factory, path)
  return EMBEDDERS[name]


def make_embedder(config: IclmConfig) -> embed_lib.Embedder:
  """Returns the embedder `config.embedder` names; raises ValueError naming the registered ones
  if it is not registered."""
  if config.embedder not in EMBEDDERS:
    raise ValueError(f"Unknown embedder {config.embedder!r}; registered: "
                     f"{', '.join(sorted(EMBEDDERS))}. {_ELSEWHERE}; register your own with "
                     f"mixjax.iclm.stages.register_embedder.")
  return EMBEDDERS[config.embedder].build(config)


register_embedder("hashed", lambda c: embed_lib.HashedTfidfEmbedder(dim=c.dim))
register_embedder("sentence_transformers",
                  lambda c: embed_lib.SentenceTransformerEmbedder(c.embedder_path),
                  path="a local sentence-transformers model directory")


class Workdir:
  """Paths of one run: DIR/stages/<stage>/… and the outputs in DIR."""

  def __init__(self, config: IclmConfig):
    self.config = config
    self.root = config.output_dir
    self.stages = os.path.join(self.root, "stages")

  def stage(self, name: str) -> str:
    path = os.path.join(self.stages, name)
    os.makedirs(path, exist_ok=True)
    return path

  def done(self, name: str) -> bool:
    return iclm_io.is_done(os.path.join(self.stages, name))

  def check_config(self) -> None:
    """Records the config on the first run; a rerun with another config raises."""
    path = os.path.join(self.stages, "config.json")
    current = self.config.fingerprint()
    if not os.path.exists(path):
      os.makedirs(self.stages, exist_ok=True)
      iclm_io.save_json(path, current)
      return
    previous = iclm_io.load_json(path)
    changed = sorted(k for k in set(current) | set(previous) if current.get(k) != previous.get(k))
    if changed:
      raise ValueError(
          f"{self.root} holds a run with other settings or inputs ({', '.join(changed)} differ). "
          f"Use a new --output directory, or pass --restart to discard the old run.")

  def clear(self) -> None:
    """Deletes what earlier runs wrote here (only files this pipeline names)."""
    shutil.rmtree(self.stages, ignore_errors=True)
    for name in os.listdir(self.root) if os.path.isdir(self.root) else ():
      if name in (REPORT, NEAR_DUPLICATES) or (name.startswith(OUTPUT_PREFIX + "-")
                                                and name.endswith(".jsonl")):
        os.remove(os.path.join(self.root, name))

  def bar(self, stage: str, total: int, unit: str = "doc", iterable=None) -> tqdm.tqdm:
    """The stage's progress bar (over `iterable` when given)."""
    return tqdm.tqdm(iterable, total=total, desc=f"iclm {stage}", unit=unit, unit_scale=True,
                     disable=not self.config.progress, dynamic_ncols=True)


@dataclasses.dataclass(frozen=True)
class Worker:
  """This process takes shards `index, index + count, …` of every sharded stage."""
  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not 0 <= self.index < self.count:
      raise ValueError(f"Worker {self.index}/{self.count}: need 0 <= index < count.")

  def mine(self, num_shards: int) -> list[int]:
    return list(range(self.index, num_shards, self.count))


class StagePending(Exception):
  """A sharded stage still has shards that other workers are writing."""


# ---------------------------------------------------------------- scan, fit


def scan(wd: Workdir) -> iclm_io.LineIndex:
  path = os.path.join(wd.stage("scan"), "lines.npz")
  if wd.done("scan"):
    return iclm_io.LineIndex.load(path)
  with wd.bar("scan", len(wd.config.inputs), unit="file") as bar:
    index = iclm_io.scan_lines(wd.config.inputs, progress=bar.update)
  index.save(path)
  iclm_io.mark_done(wd.stage("scan"), {"lines": len(index)})
  return index


def _parse_lines(reader: iclm_io.LineReader, lines_L: np.ndarray):
  """Yields `(line, record, None)` for good lines and `(line, None, reason)` for bad ones."""
  for line, raw in zip(lines_L.tolist(), reader.lines(lines_L)):
    try:
      yield line, iclm_io.parse_record(raw), None
    except iclm_io.BadRecord as e:
      yield line, None, e.reason


def fit(wd: Workdir, index: iclm_io.LineIndex, embedder: embed_lib.Embedder) -> embed_lib.State:
  """Fits the embedder on up to `fit_docs` lines spread evenly over the input."""
  path = os.path.join(wd.stage("fit"), "state.npz")
  if wd.done("fit"):
    return iclm_io.load_npz(path)
  num = min(len(index), wd.config.fit_docs)
  sample_L = np.unique(np.linspace(0, max(len(index) - 1, 0), num).astype(np.int64))
  parsed = _parse_lines(iclm_io.LineReader(index), sample_L)
  # Bad lines are left out of the sample here; the embed stage counts or reports them.
  texts = [r["text"] for _, r, _ in wd.bar("fit", len(sample_L), iterable=parsed) if r is not None]
  state = embedder.fit(texts)
  iclm_io.save_npz(path, **state)
  iclm_io.mark_done(wd.stage("fit"), {"sample_docs": len(texts)})
  return state


# ---------------------------------------------------------------- embed


def embed_shards(index: iclm_io.LineIndex, config: IclmConfig) -> list[tuple[int, int]]:
  return iclm_io.shard_bounds(len(index), config.shard_lines)


def _bad_lines_error(index: iclm_io.LineIndex, bad: list[tuple[int, str]]) -> ValueError:
  examples = "\n  ".join(f"{index.where(line)}: {reason}" for line, reason in bad[:_MAX_EXAMPLES])
  return ValueError(
      f"{len(bad)} bad input line(s), e.g.:\n  {examples}\nEach line must be a UTF-8 JSON object "
      f"with a string 'text' field and no 'context' field. Fix them, or pass --skip_bad_records "
      f"to skip them (they are counted in report.json).")


def embed_shard(wd: Workdir, index: iclm_io.LineIndex, embedder: embed_lib.Embedder,
                state: embed_lib.State, shard: int) -> None:
  """Parses, validates and embeds one shard of input lines into `embed/shard-*.npz`."""
  bounds = embed_shards(index, wd.config)
  path = iclm_io.shard_path(wd.stage("embed"), shard, len(bounds))
  if os.path.exists(path):
    return
  start, end = bounds[shard]
  good, bad, records = [], [], []
  for line, record, reason in _parse_lines(iclm_io.LineReader(index), np.arange(start, end)):
    if record is None:
      bad.append((line, reason))
    else:
      good.append(line)
      records.append(record)
  hard = [b for b in bad if b[1] != iclm_io.EMPTY_LINE]
  if hard and not wd.config.skip_bad_records:
    raise _bad_lines_error(index, hard)
  texts = [r["text"] for r in records]
  emb_ND = embedder.embed(texts, state)
  iclm_io.save_npz(
      path, emb_ND=emb_ND.astype(np.float16), line_N=np.array(good, np.int64),
      nbytes_N=np.array([len(t.encode("utf-8", "replace")) for t in texts], np.int64),
      id_N=np.array([iclm_io.id_key(r) for r in records], np.str_),
      bad_line_B=np.array([b[0] for b in bad], np.int64),
      bad_reason_B=np.array([b[1] for b in bad], np.str_))


def _run_sharded(wd: Workdir, stage: str, worker: Worker, run_shard: Callable[[int], None],
                 shard_file: Callable[[int], str], sizes: Sequence[int]) -> None:
  """Runs this worker's missing shards; marks the stage done once every shard file exists."""
  mine = worker.mine(len(sizes))
  todo = [s for s in mine if not os.path.exists(shard_file(s))]
  with wd.bar(stage, sum(sizes[s] for s in mine)) as bar:
    bar.update(sum(sizes[s] for s in mine if s not in todo))
    for s in todo:
      run_shard(s)
      bar.update(sizes[s])
  missing = [s for s in range(len(sizes)) if not os.path.exists(shard_file(s))]
  if missing:
    raise StagePending(f"{stage}: {len(sizes) - len(missing)} of {len(sizes)} shards done; the "
                       f"other {len(missing)} belong to other workers. Rerun once they finish.")
  iclm_io.mark_done(wd.stage(stage), {"shards": len(sizes)})


def embed(wd: Workdir, index: iclm_io.LineIndex, embedder: embed_lib.Embedder,
          state: embed_lib.State, worker: Worker = Worker()) -> None:
  if wd.done("embed"):
    return
  bounds = embed_shards(index, wd.config)
  _run_sharded(wd, "embed", worker, lambda s: embed_shard(wd, index, embedder, state, s),
               lambda s: iclm_io.shard_path(wd.stage("embed"), s, len(bounds)),
               [e - s for s, e in bounds])


def _embed_shard_files(wd: Workdir) -> list[str]:
  info = iclm_io.load_json(os.path.join(wd.stage("embed"), iclm_io.DONE))
  return [iclm_io.shard_path(wd.stage("embed"), s, info["shards"]) for s in range(info["shards"])]


# ---------------------------------------------------------------- docs


@dataclasses.dataclass(frozen=True)
class Docs:
  """The kept documents, numbered 0..N-1 in input order.

  Embed shard `s` holds `rows_S[s]` embedded rows (one per good line), of which those with
  `keep_E` (no repeated id) are documents; the knn stage uses the same shards.
  """
  line_N: np.ndarray    # global input line of each document
  nbytes_N: np.ndarray  # UTF-8 bytes of its text
  keep_E: np.ndarray    # over every embedded row (all embed shards, in order): kept?
  rows_S: np.ndarray    # embedded rows per embed shard

  def shard(self, shard: int) -> tuple[int, np.ndarray]:
    """`(first document, keep mask over the shard's rows)` of embed shard `shard`."""
    row_start = int(self.rows_S[:shard].sum())
    keep = self.keep_E[row_start:row_start + int(self.rows_S[shard])]
    return int(self.keep_E[:row_start].sum()), keep


def _duplicate_ids(id_E: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
  """Mask of rows whose non-empty id appeared on an earlier row, and (first, repeat) row pairs."""
  rows = np.flatnonzero(id_E != "")
  by_id = rows[np.argsort(id_E[rows], kind="stable")]
  ids = id_E[by_id]
  repeat = np.zeros(len(by_id), bool)
  repeat[1:] = ids[1:] == ids[:-1]
  first_of = by_id[np.maximum.accumulate(np.where(repeat, 0, np.arange(len(by_id))))]
  dup_E = np.zeros(len(id_E), bool)
  dup_E[by_id[repeat]] = True
  return dup_E, list(zip(first_of[repeat].tolist(), by_id[repeat].tolist()))


def collect_docs(wd: Workdir, index: iclm_io.LineIndex) -> Docs:
  """Gathers the embed shards' metadata; rejects (or skips) duplicate ids; writes the report of
  skipped lines."""
  path = os.path.join(wd.stage("docs"), "docs.npz")
  if wd.done("docs"):
    return Docs(**iclm_io.load_npz(path))
  files = _embed_shard_files(wd)
  shards = [iclm_io.load_npz(p) for p in wd.bar("docs", len(files), "shard", files)]
  cat = lambda key: np.concatenate([s[key] for s in shards])
  line_E, id_E, nbytes_E = cat("line_N"), cat("id_N"), cat("nbytes_N")
  dup_E, pairs = _duplicate_ids(id_E)
  if pairs and not wd.config.skip_bad_records:
    examples = "\n  ".join(f"id {id_E[b]} at {index.where(line_E[a])} and {index.where(line_E[b])}"
                           for a, b in pairs[:_MAX_EXAMPLES])
    raise ValueError(f"{len(pairs)} duplicate document id(s), e.g.:\n  {examples}\nIds must be "
                     f"unique; fix the input, or pass --skip_bad_records to keep the first of each.")
  skipped = [(int(l), str(r)) for l, r in zip(cat("bad_line_B"), cat("bad_reason_B"))]
  skipped += [(int(line_E[b]), f"duplicate id {id_E[b]}") for _, b in pairs]
  _write_skipped(wd, index, skipped)
  docs = Docs(line_N=line_E[~dup_E], nbytes_N=nbytes_E[~dup_E], keep_E=~dup_E,
              rows_S=np.array([len(s["line_N"]) for s in shards], np.int64))
  iclm_io.save_npz(path, **dataclasses.asdict(docs))
  iclm_io.mark_done(wd.stage("docs"), {"documents": int(len(docs.line_N))})
  return docs


def _reason_kind(reason: str) -> str:
  # Reasons carry details after " (" or the id after "duplicate id"; count by their kind.
  return "duplicate id" if reason.startswith("duplicate id") else reason.split(" (")[0]


def _write_skipped(wd: Workdir, index: iclm_io.LineIndex, skipped: list[tuple[int, str]]) -> None:
  skipped.sort()
  counts = collections.Counter(_reason_kind(r) for _, r in skipped)
  with iclm_io.atomic_write(os.path.join(wd.stage("docs"), "skipped.tsv"), "w") as f:
    f.writelines(f"{index.where(line)}\t{reason}\n" for line, reason in skipped)
  iclm_io.save_json(os.path.join(wd.stage("docs"), "skipped.json"), {
      "total": len(skipped), "by_reason": dict(counts),
      "examples": [f"{index.where(line)}: {reason}" for line, reason in skipped[:_MAX_EXAMPLES]]})


def shard_embeddings(wd: Workdir, docs: Docs, shard: int) -> tuple[int, np.ndarray]:
  """`(first document, float32 [n, D] embeddings)` of the documents in embed shard `shard`."""
  first, keep = docs.shard(shard)
  path = iclm_io.shard_path(wd.stage("embed"), shard, len(docs.rows_S))
  return first, iclm_io.load_npz(path)["emb_ND"][keep].astype(np.float32)


def load_embeddings(wd: Workdir, docs: Docs) -> np.ndarray:
  """float32 `[N, D]` embeddings of all documents."""
  return np.concatenate([shard_embeddings(wd, docs, s)[1] for s in range(len(docs.rows_S))])


# ---------------------------------------------------------------- index, knn


def index_spec(wd: Workdir, docs: Docs) -> knn_lib.IndexSpec:
  return wd.config.index.resolve(len(docs.line_N))


def train_index(wd: Workdir, docs: Docs):
  """An empty index trained on a seeded sample of documents from every shard."""
  knn_lib.set_threads(wd.config.threads)
  spec = index_spec(wd, docs)
  num_docs = len(docs.line_N)
  sample = np.sort(np.random.default_rng(wd.config.seed).choice(
      num_docs, min(num_docs, max(1, spec.train_size())), replace=False))
  parts = []
  for shard in range(len(docs.rows_S)):
    first, emb_ND = shard_embeddings(wd, docs, shard)
    rows = sample[(sample >= first) & (sample < first + len(emb_ND))] - first
    parts.append(emb_ND[rows])
  return knn_lib.empty_index(spec, np.concatenate(parts), wd.config.seed)


def _coarse_path(wd: Workdir, docs: Docs, shard: int) -> str:
  return iclm_io.shard_path(wd.stage("index"), shard, len(docs.rows_S), prefix="coarse")


def add_shard(wd: Workdir, docs: Docs, index, shard: int) -> None:
  """Adds a shard's documents; keeps their nearest lists (IVF) for the knn stage to reuse."""
  first, emb_ND = shard_embeddings(wd, docs, shard)
  assigned = knn_lib.coarse(index, emb_ND)
  if assigned is not None:
    iclm_io.save_npz(_coarse_path(wd, docs, shard), lists_QP=assigned.lists_QP.astype(np.int32),
                     sim_QP=assigned.sim_QP)
  knn_lib.add(index, emb_ND, first, assigned)


def _load_coarse(wd: Workdir, docs: Docs, shard: int) -> knn_lib.Coarse | None:
  path = _coarse_path(wd, docs, shard)
  return knn_lib.Coarse(**iclm_io.load_npz(path)) if os.path.exists(path) else None


def index_path(wd: Workdir, name: str = "index") -> str:
  return os.path.join(wd.stage("index"), f"{name}.faiss")


def save_index(index, path: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  knn_lib.write_index(index, tmp)
  os.replace(tmp, path)


def build_index(wd: Workdir, docs: Docs) -> None:
  if wd.done("index"):
    return
  index = train_index(wd, docs)
  with wd.bar("index", len(docs.line_N)) as bar:
    for shard in range(len(docs.rows_S)):
      add_shard(wd, docs, index, shard)
      bar.update(int(docs.shard(shard)[1].sum()))
  save_index(index, index_path(wd))
  iclm_io.mark_done(wd.stage("index"), dataclasses.asdict(index_spec(wd, docs)))


def search_shard(wd: Workdir, docs: Docs, index, shard: int) -> None:
  first, emb_ND = shard_embeddings(wd, docs, shard)
  nbr_QK, sim_QK = knn_lib.search(index, emb_ND, np.arange(first, first + len(emb_ND)),
                                   wd.config.k, _load_coarse(wd, docs, shard))
  iclm_io.save_npz(iclm_io.shard_path(wd.stage("knn"), shard, len(docs.rows_S)),
                   nbr_NK=nbr_QK, sim_NK=sim_QK)


def knn(wd: Workdir, docs: Docs, worker: Worker = Worker()) -> None:
  if wd.done("knn"):
    return
  knn_lib.set_threads(wd.config.threads)
  index = knn_lib.read_index(index_path(wd), index_spec(wd, docs))
  _run_sharded(wd, "knn", worker, lambda s: search_shard(wd, docs, index, s),
               lambda s: iclm_io.shard_path(wd.stage("knn"), s, len(docs.rows_S)),
               [int(docs.shard(s)[1].sum()) for s in range(len(docs.rows_S))])


def load_neighbours(wd: Workdir) -> tuple[np.ndarray, np.ndarray]:
  """`(nbr_NK, sim_NK)` of all documents, from the knn shards."""
  info = iclm_io.load_json(os.path.join(wd.stage("knn"), iclm_io.DONE))
  shards = [iclm_io.load_npz(iclm_io.shard_path(wd.stage("knn"), s, info["shards"]))
            for s in range(info["shards"])]
  return (np.concatenate([s["nbr_NK"] for s in shards]),
          np.concatenate([s["sim_NK"] for s in shards]))


# ---------------------------------------------------------------- order


@dataclasses.dataclass(frozen=True)
class Order:
  """The output order: `doc_O` documents with their `context_O`; `dup_doc_X` of `dup_of_X` dropped."""
  doc_O: np.ndarray
  context_O: np.ndarray
  dup_doc_X: np.ndarray
  dup_of_X: np.ndarray


def _traverse(config: IclmConfig, num_docs: int, nbr_NK: np.ndarray | None,
              sim_NK: np.ndarray | None,
              progress: order_lib.Progress | None) -> tuple[np.ndarray, dict]:
  """The document order before deduplication, and the traversal's counts for the report."""
  if config.order == "random":
    return order_lib.random_order(num_docs, config.seed), {}
  graph = order_lib.neighbour_graph(nbr_NK, sim_NK)
  path_order, path_start = order_lib.greedy_paths(graph, config.seed, progress)
  return order_lib.merge_short_paths(path_order, path_start, nbr_NK, sim_NK,
                                      config.min_path_docs)


def order_documents(config: IclmConfig, emb_ND: np.ndarray, nbytes_N: np.ndarray,
                    nbr_NK: np.ndarray | None, sim_NK: np.ndarray | None,
                    progress: order_lib.Progress | None = None) -> tuple[Order, dict]:
  """Orders (`config.order`), drops near duplicates and cuts contexts. Returns stats too.

  The neighbour lists are only read by the "iclm" order (None for "random").
  """
  order_N, stats = _traverse(config, len(emb_ND), nbr_NK, sim_NK, progress)
  drop = np.zeros(len(order_N), bool)
  if config.dedup_threshold is not None:
    drop[1:] = order_lib.adjacent_pairs_similarity(emb_ND, order_N) >= config.dedup_threshold
  # A dropped document's original is the nearest kept document before it.
  kept_before = np.maximum.accumulate(np.where(drop, 0, np.arange(len(order_N))))
  doc_O = order_N[~drop]
  order = Order(doc_O, order_lib.assign_contexts(nbytes_N[doc_O] + 1, config.context_tokens),
                order_N[drop], order_N[kept_before[drop]])
  random_N = np.random.default_rng(config.seed).permutation(len(doc_O))
  contexts = int(order.context_O[-1] + 1) if len(doc_O) else 0
  stats.update(order=config.order, documents=int(len(doc_O)), near_duplicates=int(drop.sum()),
               contexts=contexts,
               mean_context_tokens=float((nbytes_N[doc_O] + 1).sum() / contexts) if contexts
               else None,
               adjacent_similarity=order_lib.adjacent_similarity(emb_ND, doc_O),
               random_order_similarity=order_lib.adjacent_similarity(emb_ND, doc_O[random_N]))
  return order, stats


def order(wd: Workdir, docs: Docs) -> Order:
  path = os.path.join(wd.stage("order"), "order.npz")
  if wd.done("order"):
    return Order(**iclm_io.load_npz(path))
  emb_ND = load_embeddings(wd, docs)
  nbr_NK, sim_NK = load_neighbours(wd) if wd.config.order == "iclm" else (None, None)
  with wd.bar("order", len(emb_ND)) as bar:
    result, stats = order_documents(wd.config, emb_ND, docs.nbytes_N, nbr_NK, sim_NK, bar.update)
  iclm_io.save_npz(path, **dataclasses.asdict(result))
  iclm_io.mark_done(wd.stage("order"), stats)
  return result


# ---------------------------------------------------------------- write


def output_shards(context_O: np.ndarray, shard_docs: int) -> list[tuple[int, int]]:
  """`[start, end)` position ranges of about `shard_docs` documents, cut between contexts."""
  starts = np.flatnonzero(iclm_io.run_starts(context_O))
  targets = np.arange(0, len(context_O), max(1, shard_docs))
  cuts = np.unique(starts[np.minimum(np.searchsorted(starts, targets), len(starts) - 1)]) if len(
      starts) else np.array([0])
  ends = np.append(cuts[1:], len(context_O))
  return list(zip(cuts.tolist(), ends.tolist()))


def _output_path(wd: Workdir, shard: int, num_shards: int) -> str:
  return iclm_io.shard_path(wd.root, shard, num_shards, "jsonl", OUTPUT_PREFIX)


def write_shard(wd: Workdir, index: iclm_io.LineIndex, docs: Docs, result: Order,
                shard: int) -> None:
  bounds = output_shards(result.context_O, wd.config.output_shard_docs)
  s, e = bounds[shard]
  raw = iclm_io.LineReader(index).lines(docs.line_N[result.doc_O[s:e]])
  with iclm_io.atomic_write(_output_path(wd, shard, len(bounds))) as f:
    f.writelines(iclm_io.with_context(r, c) for r, c in zip(raw, result.context_O[s:e].tolist()))


def _write_near_duplicates(wd: Workdir, index: iclm_io.LineIndex, docs: Docs,
                           result: Order) -> None:
  """Dropped near duplicates go to their own file, each with the input line it duplicates."""
  raw = iclm_io.LineReader(index).lines(docs.line_N[result.dup_doc_X])
  with iclm_io.atomic_write(os.path.join(wd.root, NEAR_DUPLICATES)) as f:
    for r, of in zip(raw, result.dup_of_X.tolist()):
      f.write(r.rstrip()[:-1] + b', "duplicate_of": %s}\n' %
              json.dumps(index.where(int(docs.line_N[of]))).encode())


def write(wd: Workdir, index: iclm_io.LineIndex, docs: Docs, result: Order,
          worker: Worker = Worker()) -> dict:
  if not wd.done("write"):
    bounds = output_shards(result.context_O, wd.config.output_shard_docs)
    if len(result.dup_doc_X):
      _write_near_duplicates(wd, index, docs, result)
    _run_sharded(wd, "write", worker, lambda s: write_shard(wd, index, docs, result, s),
                 lambda s: _output_path(wd, s, len(bounds)), [e - s for s, e in bounds])
  return write_report(wd, index)


def stage_info(wd: Workdir, stage: str) -> dict:
  """What a finished stage recorded in its marker (without the marker's timestamp)."""
  info = iclm_io.load_json(os.path.join(wd.stage(stage), iclm_io.DONE))
  return {k: v for k, v in info.items() if k != "done_at"}


def write_report(wd: Workdir, index: iclm_io.LineIndex) -> dict:
  load = functools.partial(stage_info, wd)
  skipped = iclm_io.load_json(os.path.join(wd.stage("docs"), "skipped.json"))
  report = {"input_lines": len(index), "skipped": skipped, **load("order"),
            "index": load("index") if wd.done("index") else None,  # None: random order
            "embedder": wd.config.embedder,
            "output_shards": load("write")["shards"]}
  iclm_io.save_json(os.path.join(wd.root, REPORT), report)
  return report


# ---------------------------------------------------------------- all stages


def plan(config: IclmConfig, until: str = "write") -> tuple[str, ...]:
  """The stages a run goes through, in order, up to `until`: every stage, less index and knn for
  `order="random"` (it reads no neighbours). The local and the Beam runner both follow it."""
  if until not in STAGES:
    raise ValueError(f"Unknown stage {until!r}; valid: {', '.join(STAGES)}.")
  skipped = ("index", "knn") if config.order == "random" else ()
  return tuple(s for s in STAGES[:STAGES.index(until) + 1] if s not in skipped)


def run(config: IclmConfig, until: str = "write", worker: Worker = Worker(),
        restart: bool = False, embedder: embed_lib.Embedder | None = None) -> dict | None:
  """Runs (or resumes) every stage up to `until`; returns the report once `write` is done.

  With several workers, each takes its share of the sharded stages and raises `StagePending`
  where it must wait for the others; rerun once they are done. `embedder` overrides
  `config.embedder` (e.g. a `MeanPooledLMEmbedder` over a model in memory); without it, an
  embedder name that is not registered raises ValueError before anything is read or written.
  """
  wanted = plan(config, until)
  embedder = embedder or make_embedder(config)
  wd = Workdir(config)
  if restart:
    wd.clear()
  wd.check_config()
  index = scan(wd)
  if "fit" in wanted:
    state = fit(wd, index, embedder)
  if "embed" in wanted:
    embed(wd, index, embedder, state, worker)
  if "docs" not in wanted:
    return None
  docs = collect_docs(wd, index)
  if "index" in wanted:
    build_index(wd, docs)
  if "knn" in wanted:
    knn(wd, docs, worker)
  if "order" not in wanted:
    return None
  result = order(wd, docs)
  return write(wd, index, docs, result, worker) if "write" in wanted else None
