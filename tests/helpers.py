"""Small shared fixtures for tests: a tiny registered JSONL task, and tiny runs built from
gin/runs/tiny.gin (the one tiny run of tests, notebooks and smoke runs) with overrides."""

import json
import random

import gin
import numpy as np

from mixjax import gin_utils
from mixjax import vocab as vocab_lib
from mixjax.data import tasks
from mixjax.training import loop
import mixjax_tasks

WORDS = "the cat sat on a mat while dog ran far away from home and back again".split()
TINY_GIN = "gin/runs/tiny.gin"
# The test-sized model: smaller than models/tiny.gin, so that many short runs stay cheap.
TEST_MODEL = ("TransformerConfig.d_model=32", "TransformerConfig.head_dim=8",
              "TransformerConfig.mlp_dim=64")


def write_word_corpus(directory, seed=0, docs=(400, 40)) -> dict:
  """Writes train/validation JSONL of random word sequences; returns {split: [path]}."""
  rng = random.Random(seed)
  files = {}
  for split, n in zip(("train", "validation"), docs):
    path = directory / f"{split}.jsonl"
    with open(path, "w") as f:
      for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
        f.write(json.dumps({"text": text}) + "\n")
    files[split] = [str(path)]
  return files


def register_word_task(directory, name="test_words") -> str:
  tasks.register_jsonl_task(name, write_word_corpus(directory))
  return name


def tiny_run_configs(*bindings: str) -> dict:
  """`loop.train` keyword arguments from gin/runs/tiny.gin plus `NAME=VALUE` bindings."""
  gin.clear_config()
  try:
    gin_utils.parse_and_bind([f"--gin_file={TINY_GIN}"] + [f"--gin.{b}" for b in bindings],
                             prog="tests")
    return loop.configs_from_gin()
  finally:
    gin.clear_config()


def tiny_train_kwargs(model_dir, task, steps=6, mesh_shape=(-1, 1, 1), num_devices=None,
                      batch_size=8, length=32, checkpoint_period=3, eval_period=0, seed=0,
                      stop_at_step=None) -> dict:
  """The tiny run on `task` with the test-sized model, as `loop.train` keyword arguments."""
  return tiny_run_configs(
      *TEST_MODEL, f"MODEL_DIR='{model_dir}'", f"MIXTURE_OR_TASK_NAME='{task}'",
      f"TRAIN_STEPS={steps}", f"MESH_SHAPE={tuple(mesh_shape)}",
      f"MeshConfig.num_devices={num_devices}", f"BATCH_SIZE={batch_size}",
      f"TASK_FEATURE_LENGTHS={{'targets': {length}}}", f"CHECKPOINT_PERIOD={checkpoint_period}",
      f"EVAL_PERIOD={eval_period}", f"SEED={seed}", f"RunConfig.stop_at_step={stop_at_step}",
      "RunConfig.progress_bar=False", "CheckpointConfig.keep=5", "EvalConfig.batch_size=8",
      "EvalConfig.max_probes=100")


def train_with_gin_file(gin_file, model_dir, steps=2, *bindings: str) -> dict:
  """Trains the tiny run with `gin_file` (e.g. a method's DIR/mixture.gin) added after
  gin/runs/tiny.gin, for `steps` steps; returns the final metrics and the data config used."""
  gin.clear_config()
  try:
    gin_utils.parse_and_bind(
        [f"--gin_file={TINY_GIN}", f"--gin_file={gin_file}"] + [f"--gin.{b}" for b in (
            *TEST_MODEL, f"MODEL_DIR='{model_dir}'", f"TRAIN_STEPS={steps}", "EVAL_PERIOD=0",
            f"CHECKPOINT_PERIOD={steps}", "RunConfig.progress_bar=False", *bindings)],
        prog="tests")
    mixjax_tasks.register_all()  # with the gin files' bindings (e.g. register_synthetic)
    configs = loop.configs_from_gin()
    return {"metrics": loop.train(**configs), "data": configs["data"]}
  finally:
    gin.clear_config()


def reconstruct_chunk(inputs, targets, vocabulary=None) -> np.ndarray:
  """The chunk a UL2 example (without EOS) came from: the mode token dropped and each input
  sentinel replaced by its target span (a prefix-LM example is inputs ++ targets)."""
  inputs, targets = np.asarray(inputs), np.asarray(targets)
  lowest_sentinel = vocab_lib.sentinel_id(vocab_lib.max_sentinels(vocabulary) - 1, vocabulary)
  mode_ids = {vocab_lib.mode_token_id(t, vocabulary) for t in vocab_lib.MODE_TOKENS}
  if inputs.size and inputs[0] in mode_ids:
    inputs = inputs[1:]
  target_sentinels = np.flatnonzero(targets >= lowest_sentinel)
  if not target_sentinels.size:  # prefix LM
    return np.concatenate([inputs, targets])
  ends = np.append(target_sentinels[1:], targets.size)
  spans = {targets[i]: targets[i + 1:j] for i, j in zip(target_sentinels, ends)}
  pieces = np.split(inputs, np.flatnonzero(inputs >= lowest_sentinel))
  return np.concatenate(pieces[:1] + [np.concatenate([spans[p[0]], p[1:]]) for p in pieces[1:]])
