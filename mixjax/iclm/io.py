"""File handling for the ICLM pipeline: atomic writes, stage markers, and validated JSONL input.

Every stage writes its files through `atomic_write`/`save_npz` (a temporary file renamed into place),
so a crash leaves either a whole file or none; a stage is complete once its `_DONE` marker exists.
Input lines are addressed by a global line index over the input files (see `LineIndex`), which is
what lets stages and Beam workers split the corpus into shards without reading it first.
"""

import contextlib
import dataclasses
import json
import os
import time
from typing import Callable, Iterator, Sequence

import numpy as np

DONE = "_DONE"
# Newlines are searched for in blocks of this many bytes, which bounds the scan's memory.
_SCAN_BLOCK = 1 << 26


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
  """Opens a temporary sibling of `path` for writing; renames it onto `path` on success."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, mode) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save_npz(path: str, **arrays: np.ndarray) -> None:
  with atomic_write(path) as f:
    np.savez(f, **arrays)


def load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def save_json(path: str, obj) -> None:
  with atomic_write(path, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)


def load_json(path: str):
  with open(path) as f:
    return json.load(f)


def is_done(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, DONE))


def mark_done(stage_dir: str, info: dict | None = None) -> None:
  """Writes the stage's completion marker: `info` plus `done_at` (Unix time, for benchmarks)."""
  save_json(os.path.join(stage_dir, DONE), {**(info or {}), "done_at": time.time()})


def run_starts(x_sorted: np.ndarray) -> np.ndarray:
  """Mask of the first element of each run of equal values."""
  mask = np.ones(len(x_sorted), bool)
  mask[1:] = x_sorted[1:] != x_sorted[:-1]
  return mask


def sorted_unique(x: np.ndarray) -> np.ndarray:
  """Sorted distinct values of an integer array."""
  # np.unique hashes integer arrays in numpy 2.x, which is many times slower than sorting here.
  x = np.sort(x)
  return x[run_starts(x)]


def shard_path(stage_dir: str, shard: int, num_shards: int, ext: str = "npz",
               prefix: str = "shard") -> str:
  return os.path.join(stage_dir, f"{prefix}-{shard:05d}-of-{num_shards:05d}.{ext}")


def shard_bounds(total: int, shard_size: int) -> list[tuple[int, int]]:
  """Contiguous `[start, end)` ranges of at most `shard_size` covering `range(total)` (one if empty)."""
  starts = list(range(0, total, shard_size)) or [0]
  return [(s, min(s + shard_size, total)) for s in starts]


@dataclasses.dataclass(frozen=True)
class LineIndex:
  """Where every input line is: `paths[file_L[i]]`, bytes `[start_L[i], end_L[i])` (newline excluded).

  Line `i` is global over the input files, in the order given; `line_number(i)` is 1-based per file.
  """
  paths: tuple[str, ...]
  file_L: np.ndarray
  start_L: np.ndarray
  end_L: np.ndarray
  first_line_F: np.ndarray  # global index of each file's first line

  def __len__(self) -> int:
    return len(self.file_L)

  def where(self, line: int) -> str:
    f = int(self.file_L[line])
    return f"{self.paths[f]}:{line - int(self.first_line_F[f]) + 1}"

  def save(self, path: str) -> None:
    save_npz(path, paths=np.array(self.paths), file_L=self.file_L, start_L=self.start_L,
             end_L=self.end_L, first_line_F=self.first_line_F)

  @classmethod
  def load(cls, path: str) -> "LineIndex":
    z = load_npz(path)
    return cls(tuple(str(p) for p in z["paths"]), z["file_L"], z["start_L"], z["end_L"],
               z["first_line_F"])


def _line_spans(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Byte spans `[start, end)` of every line of `path`, scanning in blocks (no Python per line)."""
  size = os.path.getsize(path)
  if size == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  buf = np.memmap(path, np.uint8, "r")
  newlines = [np.flatnonzero(buf[s:s + _SCAN_BLOCK] == ord("\n")) + s
              for s in range(0, size, _SCAN_BLOCK)]
  ends = np.concatenate(newlines).astype(np.int64)
  if buf[-1] != ord("\n"):  # a last line without a newline is still a line
    ends = np.append(ends, size)
  starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
  return starts, ends


def scan_lines(paths: Sequence[str], progress: Callable[[int], None] = lambda n: None) -> LineIndex:
  """Indexes the lines of `paths` (a missing file raises, naming it); `progress(1)` per file."""
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"Input file(s) not found: {', '.join(missing)}. Pass existing JSONL "
                            f"files, comma-separated.")
  spans = []
  for p in paths:
    spans.append(_line_spans(p))
    progress(1)
  counts = np.array([len(s) for s, _ in spans], np.int64)
  return LineIndex(
      paths=tuple(os.path.abspath(p) for p in paths),
      file_L=np.repeat(np.arange(len(paths), dtype=np.int32), counts),
      start_L=np.concatenate([s for s, _ in spans] + [np.zeros(0, np.int64)]),
      end_L=np.concatenate([e for _, e in spans] + [np.zeros(0, np.int64)]),
      first_line_F=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))


class LineReader:
  """Random access to raw input lines by global index (memory-mapped files, opened lazily)."""

  def __init__(self, index: LineIndex):
    self._index = index
    self._maps: dict[int, np.memmap] = {}

  def _map(self, f: int) -> np.memmap:
    if f not in self._maps:
      path = self._index.paths[f]
      self._maps[f] = (np.memmap(path, np.uint8, "r") if os.path.getsize(path)
                       else np.zeros(0, np.uint8))
    return self._maps[f]

  def lines(self, lines_L: np.ndarray) -> Iterator[bytes]:
    """Yields the raw bytes (newline excluded) of each line in `lines_L`, in that order."""
    idx = self._index
    for f, s, e in zip(idx.file_L[lines_L].tolist(), idx.start_L[lines_L].tolist(),
                       idx.end_L[lines_L].tolist()):
      yield self._map(f)[s:e].tobytes()


class BadRecord(ValueError):
  """An input line that is not a usable document; `reason` says why, in a few words."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


EMPTY_LINE = "empty line"
RESERVED_FIELD = "context"


def parse_record(raw: bytes) -> dict:
  """Parses one JSONL line into a record with a string `text`; raises `BadRecord` otherwise."""
  if not raw.strip():
    raise BadRecord(EMPTY_LINE)
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise BadRecord(f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise BadRecord(f"not valid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(record, dict):
    raise BadRecord(f"not a JSON object (got {type(record).__name__})")
  if not isinstance(record.get("text"), str):
    raise BadRecord("missing 'text' field (a string)" if "text" not in record
                    else f"'text' is a {type(record['text']).__name__}, not a string")
  if RESERVED_FIELD in record:
    raise BadRecord(f"already has a '{RESERVED_FIELD}' field, which the output sets")
  return record


def id_key(record: dict) -> str:
  """The record's `id` as a canonical JSON string ('' when absent), so 1 and "1" stay distinct."""
  return json.dumps(record["id"], sort_keys=True) if "id" in record else ""


def with_context(raw: bytes, context: int) -> bytes:
  """The input line with `"context": N` appended, byte for byte otherwise (no re-encoding)."""
  body = raw.rstrip()
  return body[:-1] + b', "context": %d}\n' % context
