"""Ordering documents along their neighbour graph, and grouping the order into training contexts.

`greedy_paths` is Algorithm 1 of Shi et al., *In-Context Pretraining* (2024): start a path at an
unvisited document of minimum degree, step to the most similar unvisited neighbour until none is
left, repeat; every document is visited exactly once. `merge_short_paths` then moves each short path
next to its most similar document in a long path. `public_greedy_order` is the released code's
simpler walk (first unvisited of the top-10 neighbours, clusters of 21), kept as the peer to beat;
`random_order` is the baseline that training experiments compare against.

The walk is sequential by nature; it runs over flat CSR arrays through memoryviews, with a pointer
per row that only moves forward, so its total work is O(edges): a few seconds per million
documents in CPython. Everything around it (graph building, merging, contexts, metrics) is
vectorised numpy.
"""

import dataclasses
from typing import Callable, Iterator

import numpy as np

from mixjax.iclm import io as iclm_io

Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Graph:
  """Undirected neighbour graph in CSR form; each row lists its neighbours most similar first."""
  indptr_N1: np.ndarray  # int64 [N + 1]
  col_E: np.ndarray      # int64 [E]

  @property
  def degree_N(self) -> np.ndarray:
    return np.diff(self.indptr_N1)


def _lists(nbr_NK: np.ndarray, row_E: np.ndarray, col_E: np.ndarray,
           chunk: int = 1 << 20) -> np.ndarray:
  """Whether `col_E[e]` is among the neighbours of `row_E[e]`, per edge."""
  out = np.empty(len(row_E), bool)
  for s in range(0, len(row_E), chunk):
    out[s:s + chunk] = (nbr_NK[row_E[s:s + chunk]] == col_E[s:s + chunk, None]).any(axis=1)
  return out


def neighbour_graph(nbr_NK: np.ndarray, sim_NK: np.ndarray) -> Graph:
  """The kNN lists made undirected (u lists v when either found the other), rows sorted by sim.

  Slots with `nbr < 0` (no neighbour found) are ignored.
  """
  n, k = nbr_NK.shape
  valid = (nbr_NK >= 0).ravel()
  src = np.repeat(np.arange(n, dtype=np.int64), k)[valid]
  dst = nbr_NK.ravel()[valid].astype(np.int64)
  sim = np.clip(np.nan_to_num(sim_NK.ravel()[valid], neginf=-1.0), -1.0, 1.0)
  # Reverse edges for one-sided pairs only: a mutual pair is already listed both ways.
  rev = ~_lists(nbr_NK, dst, src)
  rows = np.concatenate([src, dst[rev]]).astype(np.uint64)
  cols = np.concatenate([dst, src[rev]]).astype(np.uint64)
  sim = np.concatenate([sim, sim[rev]])
  id_bits = max(1, (n - 1).bit_length())
  sim_bits = 64 - 2 * id_bits
  if sim_bits < 8:
    raise ValueError(f"{n} documents is too many to order on one machine (at most 2**28).")
  # Pack (row, quantised dissimilarity, column) into one uint64 so that a single sort of plain
  # integers (several times faster than a lexsort) orders every row most-similar-first.
  q = np.rint((1.0 - sim) / 2.0 * float((1 << sim_bits) - 1)).astype(np.uint64)
  key = np.sort((rows << np.uint64(sim_bits + id_bits)) | (q << np.uint64(id_bits)) | cols)
  indptr = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount((key >> np.uint64(sim_bits + id_bits)).astype(np.int64), minlength=n),
            out=indptr[1:])
  return Graph(indptr, (key & np.uint64((1 << id_bits) - 1)).astype(np.int64))


def start_order(degree_N: np.ndarray, seed: int) -> np.ndarray:
  """Documents by increasing degree, ties in a seeded random order (not the input order)."""
  tiebreak = np.random.default_rng(seed).permutation(len(degree_N))
  return np.lexsort((tiebreak, degree_N))


def _unvisited(start_N: np.ndarray, visited: bytearray) -> Iterator[int]:
  """Yields the documents of `start_N` in order, skipping those visited by the time they come up."""
  for u in memoryview(np.ascontiguousarray(start_N, np.int64)):
    if not visited[u]:
      yield u


def greedy_paths(graph: Graph, seed: int,
                 progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Algorithm 1: returns `(order_N, path_start_P)`, the visit order and where each path starts.

  Degree is the degree in the whole graph (the paper's remaining-graph degree would need a
  priority-queue update per edge, in Python).
  """
  n = len(graph.indptr_N1) - 1
  ptr = memoryview(graph.indptr_N1[:-1].copy())
  end = memoryview(graph.indptr_N1[1:].copy())
  col = memoryview(np.ascontiguousarray(graph.col_E, np.int64))
  visited = bytearray(n)
  order, path_start = [], []
  report_every, reported = max(1, n // 100), 0
  for u in _unvisited(start_order(graph.degree_N, seed), visited):
    path_start.append(len(order))
    if progress is not None and len(order) - reported >= report_every:
      progress(len(order) - reported)
      reported = len(order)
    while True:
      visited[u] = 1
      order.append(u)
      p, e = ptr[u], end[u]
      while p < e and visited[col[p]]:  # rows are sorted: the first unvisited is the best
        p += 1
      ptr[u] = p
      if p == e:
        break
      u = col[p]
  if progress is not None:
    progress(n - reported)
  return np.array(order, np.int64), np.array(path_start, np.int64)


def _move(order_N: np.ndarray, pos_M: np.ndarray, host_pos_M: np.ndarray,
          rank_M: np.ndarray) -> np.ndarray:
  """Moves the documents at `pos_M` next to those at `host_pos_M`.

  A positive `rank` puts a document after its host, a negative one before; documents that share a
  host line up by rank, then by their old position.
  """
  primary = np.arange(len(order_N))
  primary[pos_M] = host_pos_M
  secondary = np.zeros(len(order_N), np.int64)
  secondary[pos_M] = rank_M
  return order_N[np.lexsort((secondary, primary))]


def _inverse(order_N: np.ndarray) -> np.ndarray:
  pos_N = np.empty_like(order_N)
  pos_N[order_N] = np.arange(len(order_N))
  return pos_N


def _first_match(cand_MK: np.ndarray, ok_MK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per row, the first candidate where `ok` (lists are most-similar-first): (found_M, col_M)."""
  return ok_MK.any(axis=1), np.argmax(ok_MK, axis=1)


def merge_short_paths(order_N: np.ndarray, path_start_P: np.ndarray, nbr_NK: np.ndarray,
                      sim_NK: np.ndarray, min_docs: int) -> tuple[np.ndarray, dict]:
  """Moves every path shorter than `min_docs` next to its most similar document in a long path.

  The short path goes right after that host document, turned so that the end nearer the document
  that found the host comes first. A short path with no neighbour in a long path stays put.
  Returns the new order and counts for the report.
  """
  n = len(order_N)
  pos_of_doc = _inverse(order_N)
  len_P = np.diff(np.append(path_start_P, n))
  path_of_pos = np.repeat(np.arange(len(len_P)), len_P)
  path_of_doc = path_of_pos[pos_of_doc]
  short_P = len_P < min_docs
  pos_M = np.flatnonzero(short_P[path_of_pos])
  doc_M = order_N[pos_M]
  cand_MK = nbr_NK[doc_M]
  found_M, col_M = _first_match(cand_MK, (cand_MK >= 0) & ~short_P[path_of_doc[cand_MK]])
  host_sim_M = np.where(found_M, sim_NK[doc_M, col_M], -np.inf)
  # The anchor of each short path: its document with the most similar host.
  path_M = path_of_pos[pos_M]
  by_path = np.lexsort((-host_sim_M, path_M))
  first = by_path[iclm_io.run_starts(path_M[by_path])]
  anchor_P = np.full(len(len_P), -1)
  anchor_P[path_M[first]] = first
  anchor_M = anchor_P[path_M]
  hosted_M = found_M[anchor_M]
  # Index within the path, reversed when the anchor sits in the path's second half.
  idx_M = pos_M - path_start_P[path_M]
  anchor_idx_M = idx_M[anchor_M]
  flip_M = 2 * anchor_idx_M > len_P[path_M] - 1
  oriented_M = np.where(flip_M, len_P[path_M] - 1 - idx_M, idx_M)
  host_pos_M = pos_of_doc[cand_MK[anchor_M, col_M[anchor_M]]]
  rank_M = 1 + path_M * min_docs + oriented_M
  new_order = _move(order_N, pos_M[hosted_M], host_pos_M[hosted_M], rank_M[hosted_M])
  merged = len(np.unique(path_M[hosted_M]))
  return new_order, {"paths": len(len_P), "short_paths": int(short_P.sum()),
                     "merged_paths": merged, "unmerged_short_paths": int(short_P.sum()) - merged}


def public_greedy_order(nbr_NK: np.ndarray, seed: int, top: int = 10,
                        cluster_size: int = 21) -> np.ndarray:
  """The released ICLM sort (`sort/sort.py`), reimplemented as the baseline.

  Walk to the first unvisited document among the current one's `top` neighbours; close the
  cluster at `cluster_size` documents or when none is left, and start the next at an unvisited
  document (the original pops a set; here a seeded random order, so input order cannot leak in).
  Each document of a cluster shorter than `cluster_size` then moves before its first top neighbour
  that sits in a full cluster.
  """
  n = len(nbr_NK)
  top = min(top, nbr_NK.shape[1])
  nbr_flat = np.ascontiguousarray(nbr_NK[:, :top], np.int64)
  nbr = memoryview(nbr_flat.ravel())
  visited = bytearray(n)
  order, cluster_start = [], []
  for u in _unvisited(np.random.default_rng(seed).permutation(n), visited):
    cluster_start.append(len(order))
    for _ in range(cluster_size):
      visited[u] = 1
      order.append(u)
      nxt = -1
      for j in range(u * top, u * top + top):
        v = nbr[j]
        if v >= 0 and not visited[v]:
          nxt = v
          break
      if nxt < 0:
        break
      u = nxt
  order_N = np.array(order, np.int64)
  len_C = np.diff(np.append(cluster_start, n))
  cluster_of_pos = np.repeat(np.arange(len(len_C)), len_C)
  full_of_doc = (len_C >= cluster_size)[cluster_of_pos][_inverse(order_N)]
  pos_M = np.flatnonzero(len_C[cluster_of_pos] < cluster_size)
  cand_MK = nbr_flat[order_N[pos_M]]
  found_M, col_M = _first_match(cand_MK, (cand_MK >= 0) & full_of_doc[cand_MK])
  host_pos_M = _inverse(order_N)[cand_MK[np.arange(len(pos_M)), col_M]]
  return _move(order_N, pos_M[found_M], host_pos_M[found_M], np.full(found_M.sum(), -1))


def random_order(num_docs: int, seed: int) -> np.ndarray:
  """The baseline order: a seeded permutation of the documents (a pure function of the seed)."""
  # Its own stream, so it is not the permutation the report measures as "random_order_similarity".
  return np.random.default_rng([seed, 1]).permutation(num_docs)


def adjacent_pairs_similarity(emb_ND: np.ndarray, order_N: np.ndarray,
                              chunk: int = 1 << 16) -> np.ndarray:
  """Inner product of each document in `order_N` with the one before it ([N - 1] float32)."""
  out = np.zeros(max(len(order_N) - 1, 0), np.float32)
  for s in range(0, len(out), chunk):
    a, b = order_N[s:s + chunk], order_N[s + 1:s + chunk + 1]
    out[s:s + len(b)] = np.einsum("nd,nd->n", emb_ND[a[:len(b)]], emb_ND[b], dtype=np.float32)
  return out


def adjacent_similarity(emb_ND: np.ndarray, order_N: np.ndarray) -> float | None:
  """Mean similarity (cosine for normalised rows) of consecutive documents (None: no pairs)."""
  pairs = adjacent_pairs_similarity(emb_ND, order_N)
  return float(pairs.mean()) if len(pairs) else None


def assign_contexts(tokens_N: np.ndarray, budget: int) -> np.ndarray:
  """Context index of each document, filling contexts of `budget` tokens in order.

  A document starts a new context when it would overflow the current one; a document longer than
  `budget` gets a context of its own (the task trims it).
  """
  context, used, out = 0, 0, []
  for t in tokens_N.tolist():
    if used and used + t > budget:
      context, used = context + 1, 0
    out.append(context)
    used += t
  return np.array(out, np.int64)
