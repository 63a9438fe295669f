"""Batch inference over prompt records: the run's prompt format, length limits, batches, progress
and throughput. `python -m mixjax.infer` is a thin layer over `run_prompts`."""

import dataclasses
import json
import time
from typing import Iterable, Sequence

from absl import logging
import flax.linen as nn
import gin
import jax
import numpy as np
from tqdm import tqdm

from mixjax.data import objectives
from mixjax.inference import decoding
from mixjax.inference import generate
from mixjax.inference import restore
from mixjax.inference import sampling
from mixjax.models import transformer
from mixjax.training import partitioning
from mixjax.training import trainer

STOP_EOS, STOP_LENGTH = "eos", "max_new_tokens"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InferConfig:
  """What `python -m mixjax.infer` runs (gin: gin/runs/infer.gin); its flags override these."""
  model_dir: str | None = None   # gin: CHECKPOINT_PATH (the run's MODEL_DIR)
  step: int | None = None        # None: the newest checkpoint
  mode: str | None = None        # None: S2S for UL2 runs, none for lm runs
  batch_size: int = 16
  attention_impl: str = "auto"   # decode attention: auto | pallas | xla
  sampler_impl: str = "auto"     # auto | pallas | xla


class PromptError(ValueError):
  """Prompts that cannot be run: each problem names its prompt (file:line or --prompt N)."""


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """One prompt: its text, its mode (None: the run's default) and where it came from."""
  text: str
  mode: str | None = None
  where: str = ""


@dataclasses.dataclass(frozen=True)
class Completion:
  prompt: str
  completion: str
  num_tokens: int
  stop_reason: str  # "eos" | "max_new_tokens"


def read_prompts_file(path: str) -> list[PromptRecord]:
  """Lines of `{"prompt": TEXT, "mode"?: MODE}`; raises `PromptError` listing every bad line
  (file:line) at once. Blank lines are skipped."""
  records, problems = [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      where = f"{path}:{number}"
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        problems.append(f"{where}: not JSON ({e.msg})")
        continue
      if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        problems.append(f'{where}: needs a "prompt" string, e.g. {{"prompt": "Q: 2 + 2 ="}}')
        continue
      mode = record.get("mode")
      if mode is not None and not isinstance(mode, str):
        problems.append(f'{where}: "mode" must be a string ({", ".join(decoding.MODES)})')
        continue
      records.append(PromptRecord(record["prompt"], mode, where))
  if problems:
    raise PromptError(f"{len(problems)} bad line(s) in {path}:\n  " + "\n  ".join(problems))
  if not records:
    raise PromptError(f"{path} holds no prompts (want lines of {{\"prompt\": TEXT}}).")
  return records


def write_completions(path: str, completions: Iterable[Completion]):
  with open(path, "w", encoding="utf-8") as f:
    for c in completions:
      f.write(json.dumps(dataclasses.asdict(c), ensure_ascii=False) + "\n")


def _limits(data) -> tuple[int, int]:
  """(most prompt tokens, trained decoder length): the prompt limit leaves room for one new token
  in a training row; encoder-decoder prompts are bounded by the encoder's `inputs` length."""
  lengths = data.task_feature_lengths
  if data.feature_converter == "enc_dec":
    return lengths["inputs"], lengths["targets"]
  return data.row_length - 1, data.row_length


class PromptRunner:
  """Generates completions for prompt records with one restored run."""

  def __init__(self, run: restore.RestoredRun, attention_impl: str = "auto",
               sampler_impl: str = "auto"):
    self.run = run
    self.summary = ""  # throughput of the last call
    self.data = run.data_config
    self.objective = objectives.get(self.data.objective)
    self.generator = generate.Generator(transformer.build_model(run.model_config), run.params,
                                        self.data, attention_impl, sampler_impl, mesh=run.mesh)

  def _format(self, records: Sequence[PromptRecord], default_mode: str | None):
    """(token ids, mode) per record, after checking modes and lengths; `PromptError` lists every
    prompt that cannot run."""
    vocabulary = self.data.vocabulary
    limit, _ = _limits(self.data)
    encoded, problems = [], []
    for r in records:
      mode = r.mode or default_mode
      if self.data.objective == "lm":
        if mode not in (None, "none"):
          problems.append(f"{r.where}: mode={mode!r}, but an lm run has no modes (leave it unset)")
          continue
        mode = None
      try:
        ids = decoding.encode_prompt(r.text, "none", vocabulary)
        formatted = self.objective.prompt(ids, vocabulary, mode)
      except ValueError as e:
        problems.append(f"{r.where}: {e}")
        continue
      n = (len(formatted.inputs or ()) if self.data.feature_converter == "enc_dec"
           else len(formatted.inputs or ()) + len(formatted.prefix))
      if n > limit:
        problems.append(f"{r.where}: the prompt is {n} tokens in the run's prompt format, over "
                        f"the limit of {limit} (this model trained on "
                        f"task_feature_lengths={dict(self.data.task_feature_lengths)}); shorten it")
        continue
      encoded.append((ids, mode, n))
    if problems:
      raise PromptError(f"{len(problems)} prompt(s) cannot run:\n  " + "\n  ".join(problems))
    return encoded

  def __call__(self, records: Sequence[PromptRecord], config: sampling.SamplingConfig,
               batch_size: int = 16, default_mode: str | None = None,
               progress: bool = True) -> list[Completion]:
    """Completions in the records' order. Batches of `batch_size` (rounded up to the mesh's
    data-parallel size; short batches padded with idle rows); batch i samples with key
    `fold_in(key(seed), i)`. Logs generated tokens per second."""
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be >= 1.")
    encoded = self._format(records, default_mode)
    _, trained = _limits(self.data)
    longest = max(n for *_, n in encoded) + (1 if self.data.feature_converter != "enc_dec" else 0)
    if longest + config.max_new_tokens > trained:
      logging.warning("Prompts of up to %d tokens + max_new_tokens=%d run past the %d positions "
                      "this model trained on; later tokens use positions it never saw.",
                      longest, config.max_new_tokens, trained)
    mesh, dp = self.run.mesh, partitioning.data_parallel_size(self.run.mesh)
    rows = -(-batch_size // dp) * dp
    host = partitioning.host_rows(mesh, rows)  # the rows this process's devices hold
    vocabulary = self.data.vocabulary
    completions, total_tokens, start = [], 0, time.perf_counter()
    bar = tqdm(total=len(records), desc="infer", unit="prompt", disable=not progress,
               dynamic_ncols=True)
    bar.set_postfix(tokens_per_sec=0.0)
    key = jax.random.key(config.seed)
    for index, first in enumerate(range(0, len(records), rows)):
      chunk = encoded[first:first + rows]
      idle = rows - len(chunk)
      chunk_ids = [ids for ids, _, _ in chunk] + [chunk[0][0]] * idle
      features = _prompt_batch(self.data, chunk_ids, [m for _, m, _ in chunk] + [chunk[0][1]] * idle)
      max_new_B = np.asarray([config.max_new_tokens] * len(chunk) + [0] * idle, np.int32)
      with mesh, nn.logical_axis_rules(self.run.rules):
        out = self.generator(trainer.global_batch(mesh, {k: v[host] for k, v in features.items()}),
                             config, max_new_B, key=jax.random.fold_in(key, index))
      for r, (tokens_N, n, eos) in zip(records[first:first + rows],
                                       zip(out.tokens_BN, out.num_tokens_B, out.hit_eos_B)):
        completions.append(Completion(r.text, decoding.decode_tokens(tokens_N[:n], vocabulary),
                                      int(n), STOP_EOS if eos else STOP_LENGTH))
        total_tokens += int(n)
      bar.update(len(chunk))
      bar.set_postfix(tokens_per_sec=f"{total_tokens / (time.perf_counter() - start):.1f}")
    bar.close()
    elapsed = time.perf_counter() - start
    self.summary = (f"Generated {total_tokens} tokens for {len(records)} prompts in "
                    f"{elapsed:.1f} s ({total_tokens / max(elapsed, 1e-9):.1f} tokens/s, "
                    "compilation included).")
    logging.info(self.summary)
    return completions


def _prompt_batch(data, ids, modes):
  """`generate.prompt_batch` for rows that may each have their own mode: formatted one mode at a
  time, then each feature zero-padded to its widest (zeros are padding in every feature)."""
  groups = {}
  for i, mode in enumerate(modes):
    groups.setdefault(mode, []).append(i)
  parts = [(rows, generate.prompt_batch(data, [ids[i] for i in rows], mode))
           for mode, rows in groups.items()]
  batch = {}
  for name, value in parts[0][1].items():
    width = max(part[name].shape[1] for _, part in parts)
    batch[name] = np.zeros((len(ids), width), value.dtype)
    for rows, part in parts:
      batch[name][rows, :part[name].shape[1]] = part[name]
  return batch
