"""A DoReMi reference model from a trained mixjax run directory, its per-token losses cached.

The reference's per-token losses on a fixed set of rows (the proxy's pools, or an online
source's probe rows) are computed once and written to `CACHE_DIR/<key>.npy`, the key a hash of
the run directory, the checkpoint step, the run's saved configs and the rows themselves (every
feature's name, dtype, shape and bytes). A second call with the same run, step and rows reads
the file and restores nothing; changing any of them misses the cache.
"""

import hashlib
import json
import os
from typing import Mapping

import jax
import numpy as np

from mixjax.inference import restore
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.training import trainer

CACHE_SUBDIR = "doremi_reference_cache"  # the default cache: inside the reference run's dir


def newest_step(run_dir: str) -> int:
  """The newest checkpoint step of `run_dir` (without restoring it)."""
  return restore.checkpoint_steps(run_dir)[-1]


def rows_fingerprint(rows: Mapping[str, np.ndarray]) -> str:
  """A hash of packed rows: every feature's name, dtype, shape and bytes."""
  digest = hashlib.sha256()
  for name in sorted(rows):
    value = np.ascontiguousarray(rows[name])
    digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def cache_key(run_dir: str, step: int, rows: Mapping[str, np.ndarray]) -> str:
  saved = json.dumps(checkpoints.read_run_configs(run_dir), sort_keys=True)
  digest = hashlib.sha256(f"{os.path.abspath(run_dir)}|{step}|".encode())
  digest.update(saved.encode())
  digest.update(rows_fingerprint(rows).encode())
  return digest.hexdigest()[:32]


def _score(model_config: transformer.TransformerConfig, params, rows, chunk_rows: int):
  tokens = np.asarray(rows["decoder_target_tokens"])
  if tokens.size and int(tokens.max()) >= model_config.vocab_size:
    raise ValueError(f"The rows hold token id {int(tokens.max())} but the reference's vocabulary "
                     f"has {model_config.vocab_size} ids: the reference run must use the "
                     "proxy's vocabulary.")
  model = transformer.build_model(model_config)
  score = jax.jit(lambda p, r: trainer.token_losses(model, p, r)[0])
  n = len(tokens)
  out = []
  for start in range(0, n, chunk_rows):
    part = {f: np.asarray(v[start:start + chunk_rows]) for f, v in rows.items()}
    keep = len(part["decoder_target_tokens"])
    if keep < chunk_rows:  # one shape for every chunk: one compile
      part = {f: np.concatenate([v, np.zeros((chunk_rows - keep,) + v.shape[1:], v.dtype)])
              for f, v in part.items()}
    out.append(np.asarray(score(params, part))[:keep])
  return np.concatenate(out).astype(np.float32)


def run_losses(run_dir: str, rows: Mapping[str, np.ndarray], step: int | None = None,
               cache_dir: str | None = None, chunk_rows: int = 32) -> np.ndarray:
  """Per-token losses `[N, T]` of `run_dir`'s checkpoint `step` (default: the newest) on packed
  `rows` (features `[N, T]`), from the cache when it has them, else computed and cached."""
  step = newest_step(run_dir) if step is None else int(step)
  cache_dir = cache_dir or os.path.join(run_dir, CACHE_SUBDIR)
  path = os.path.join(cache_dir, f"{cache_key(run_dir, step, rows)}.npy")
  if os.path.exists(path):
    return np.load(path)
  run = restore.restore_run(run_dir, step)
  loss_NT = _score(run.model_config, run.params, rows, chunk_rows)
  os.makedirs(cache_dir, exist_ok=True)
  partial = f"{path}.{os.getpid()}.partial"  # written whole, then renamed: never half a file
  with open(partial, "wb") as f:
    np.save(f, loss_NT)
  os.replace(partial, path)
  return loss_NT


def pool_losses(run_dir: str, train: Mapping[str, np.ndarray], step: int | None = None,
                cache_dir: str | None = None) -> np.ndarray:
  """`run_losses` of shared pools (features `[D, N, T]`), shaped `[D, N, T]`."""
  shape = train["decoder_target_tokens"].shape
  flat = {f: v.reshape((shape[0] * shape[1],) + v.shape[2:]) for f, v in train.items()}
  return run_losses(run_dir, flat, step, cache_dir).reshape(shape)
