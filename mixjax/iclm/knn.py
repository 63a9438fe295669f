"""k nearest neighbours of every document, with faiss (inner product on L2-normalised rows).

The index kind follows the corpus size unless set: exact `flat` search while brute force is cheap,
then `ivf` (inverted lists, flat codes). `ivfpq` (as in the paper's public code) and `hnsw` are
there to be chosen. Every kind except `hnsw` is built the same way on one machine or many: train an
empty index on a sample, add shards of vectors under their global ids, merge the partial indexes.

Inverted lists hold about `list_size` vectors whatever the corpus size, and a query scans at most
`nprobe * list_size` of them (k-means lists are uneven: dense regions would cost 1.5x more), so
the search costs O(N) (recall falls slowly as N grows; raise `nprobe` to buy it back). Queries are
searched in the order of their nearest list, so that consecutive queries scan the same lists
while they are in cache.
"""

import dataclasses

import faiss
import numpy as np

INDEX_KINDS = ("flat", "ivf", "ivfpq", "hnsw")
MERGEABLE_KINDS = ("flat", "ivf", "ivfpq")
# k-means costs points x lists x iterations, and lists grow with N; 10 points per list and 5
# iterations found neighbours as well as faiss's suggested 39 and 10 on the embedded corpus
# (related bios next to each other: 0.705 vs 0.694 at 100k documents), at an eighth of the cost.
_TRAIN_POINTS_PER_LIST = 10
_KMEANS_ITERATIONS = 5


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """How to build the neighbour index. `kind='auto'`: flat up to `flat_max` documents, else ivf."""
  kind: str = "auto"
  flat_max: int = 20_000
  nlist: int = 0        # inverted lists; 0 picks N / list_size
  list_size: int = 256  # vectors per inverted list when nlist is 0
  nprobe: int = 16      # lists visited per query
  max_codes: int = 0    # vectors scanned per query at most; 0 picks nprobe x mean list size
  pq_bytes: int = 0     # ivfpq code size; 0 picks dim / 4
  hnsw_m: int = 32
  ef_search: int = 64
  hnsw_quantizer_lists: int = 16_384  # from this many lists, find the nearest ones with HNSW

  def __post_init__(self):
    if self.kind != "auto" and self.kind not in INDEX_KINDS:
      raise ValueError(f"Unknown index kind {self.kind!r}; valid: auto, {', '.join(INDEX_KINDS)}.")

  def resolve(self, num_docs: int) -> "IndexSpec":
    """This spec with `kind` and `nlist` fixed for a corpus of `num_docs` documents."""
    kind = self.kind
    if kind == "auto":
      kind = "flat" if num_docs <= self.flat_max else "ivf"
    nlist = self.nlist or max(1, min(num_docs // _TRAIN_POINTS_PER_LIST,
                                     round(num_docs / self.list_size)))
    max_codes = self.max_codes or self.nprobe * -(-num_docs // nlist)
    return dataclasses.replace(self, kind=kind, nlist=nlist, max_codes=max_codes)

  def train_size(self) -> int:
    """Vectors to train on (0: the kind needs no training)."""
    if self.kind == "ivf":
      return self.nlist * _TRAIN_POINTS_PER_LIST
    # Product quantisation trains 256 centroids per sub-vector as well (faiss wants 39 points each).
    return max(self.nlist * _TRAIN_POINTS_PER_LIST, 256 * 39) if self.kind == "ivfpq" else 0


def set_threads(num_threads: int) -> None:
  faiss.omp_set_num_threads(max(1, num_threads))


def _quantizer(spec: IndexSpec, dim: int) -> faiss.Index:
  """Finds each vector's nearest lists: exact (BLAS), or an HNSW graph over many centroids.

  Exact costs `nlist` inner products per vector, but as one matrix product; on 2 cores it beats
  the graph up to several thousand lists (measured at 1M documents, 3900 lists).
  """
  if spec.nlist < spec.hnsw_quantizer_lists:
    return faiss.IndexFlatIP(dim)
  quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
  quantizer.hnsw.efSearch = max(64, 2 * spec.nprobe)
  return quantizer


def empty_index(spec: IndexSpec, train_ND: np.ndarray, seed: int) -> faiss.Index:
  """A trained index with no vectors (`spec` must be resolved)."""
  dim = train_ND.shape[1]
  ip = faiss.METRIC_INNER_PRODUCT
  if spec.kind == "flat":
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
  if spec.kind == "hnsw":
    index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, ip)
    index.hnsw.efSearch = spec.ef_search
    return faiss.IndexIDMap2(index)
  quantizer = _quantizer(spec, dim)
  if spec.kind == "ivf":
    index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, ip)
  else:
    pq_bytes = spec.pq_bytes or max(1, dim // 4)
    if dim % pq_bytes:
      raise ValueError(f"pq_bytes={pq_bytes} must divide the embedding dim {dim}.")
    index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, pq_bytes, 8, ip)
  index.cp.seed = seed
  index.cp.niter = _KMEANS_ITERATIONS
  index.cp.min_points_per_centroid = _TRAIN_POINTS_PER_LIST
  index.train(np.ascontiguousarray(train_ND, np.float32))
  return _set_search_params(index, spec)


def _set_search_params(index: faiss.Index, spec: IndexSpec) -> faiss.Index:
  if isinstance(index, faiss.IndexIVF):
    index.nprobe = spec.nprobe
    index.max_codes = spec.max_codes
  return index


def copy(index: faiss.Index) -> faiss.Index:
  return faiss.clone_index(index)


@dataclasses.dataclass(frozen=True)
class Coarse:
  """The `nprobe` nearest inverted lists of each vector (`lists_QP[:, 0]` is where it is stored),
  computed once when adding and reused when searching: at 1M documents finding them costs about
  as much as scanning them."""
  lists_QP: np.ndarray  # int64
  sim_QP: np.ndarray    # float32


def coarse(index: faiss.Index, emb_ND: np.ndarray) -> Coarse | None:
  """The nearest lists of each row, for IVF indexes (None for the others)."""
  if not isinstance(index, faiss.IndexIVF):
    return None
  sim_QP, lists_QP = index.quantizer.search(np.ascontiguousarray(emb_ND, np.float32), index.nprobe)
  return Coarse(lists_QP, sim_QP)


def add(index: faiss.Index, emb_ND: np.ndarray, first_id: int,
        assigned: Coarse | None = None) -> None:
  """Adds rows under global ids `first_id, first_id + 1, ...` (into `assigned` lists if given)."""
  x_ND = np.ascontiguousarray(emb_ND, np.float32)
  ids = np.arange(first_id, first_id + len(emb_ND), dtype=np.int64)
  if assigned is None:
    index.add_with_ids(x_ND, ids)
    return
  lists_N = np.ascontiguousarray(assigned.lists_QP[:, 0], np.int64)
  # Named arrays: faiss.swig_ptr does not keep its argument alive.
  index.add_core(len(x_ND), faiss.swig_ptr(x_ND), faiss.swig_ptr(ids), faiss.swig_ptr(lists_N))


def merge(indexes: list[faiss.Index]) -> faiss.Index:
  """Merges partial indexes built by `add` from one `empty_index` (consumes them)."""
  merged, rest = indexes[0], indexes[1:]
  for other in rest:
    merged.merge_from(other, 0)
  return merged


def _search_in_list_order(index: faiss.Index, x_QD: np.ndarray, k: int,
                          assigned: Coarse | None) -> tuple[np.ndarray, np.ndarray]:
  """`index.search`, with IVF queries taken in the order of their nearest list (same results)."""
  assigned = assigned or coarse(index, x_QD)
  if assigned is None:
    return index.search(x_QD, k)
  perm_Q = np.argsort(assigned.lists_QP[:, 0], kind="stable")
  sim_QK, nbr_QK = index.search_preassigned(
      x_QD[perm_Q], k, assigned.lists_QP[perm_Q].astype(np.int64),
      assigned.sim_QP[perm_Q].astype(np.float32))
  inverse_Q = np.empty_like(perm_Q)
  inverse_Q[perm_Q] = np.arange(len(perm_Q))
  return sim_QK[inverse_Q], nbr_QK[inverse_Q]


def search(index: faiss.Index, emb_QD: np.ndarray, ids_Q: np.ndarray, k: int,
           assigned: Coarse | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The `k` nearest other documents of each query `ids_Q[q]`, most similar first.

  Returns `(nbr_QK int32, sim_QK float32)`; slots with no neighbour found hold -1 and -inf.
  """
  sim, nbr = _search_in_list_order(index, np.ascontiguousarray(emb_QD, np.float32), k + 1,
                                   assigned)
  # Drop each query's own id; where the search missed it, drop the weakest result instead.
  drop = nbr == ids_Q[:, None]
  drop[~drop.any(axis=1), -1] = True
  first_drop = np.argmax(drop, axis=1)
  keep = np.ones_like(drop)
  keep[np.arange(len(nbr)), first_drop] = False
  nbr_QK = nbr[keep].reshape(len(nbr), k)
  sim_QK = sim[keep].reshape(len(nbr), k)
  sim_QK[nbr_QK < 0] = -np.inf
  return nbr_QK.astype(np.int32), sim_QK.astype(np.float32)


def write_index(index: faiss.Index, path: str) -> None:
  faiss.write_index(index, path)


def read_index(path: str, spec: IndexSpec) -> faiss.Index:
  return _set_search_params(faiss.read_index(path), spec)
