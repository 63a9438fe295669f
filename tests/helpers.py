"""Small shared fixtures for tests: a tiny registered JSONL task and tiny configs."""

import json
import random

import numpy as np

from mixjax import vocab as vocab_lib
from mixjax.data import tasks as lm_tasks
from mixjax.data import pipeline
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.eval import evaluator as evaluation
from mixjax.training import loop
from mixjax.training import partitioning

WORDS = "the cat sat on a mat while dog ran far away from home and back again".split()


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
  lm_tasks.register_jsonl_task(name, write_word_corpus(directory))
  return name


def tiny_train_kwargs(model_dir, task, steps=6, mesh_shape=(-1, 1, 1), num_devices=None,
                      batch_size=8, length=32, checkpoint_period=3, eval_period=0, seed=0,
                      stop_at_step=None):
  return dict(
      run=loop.RunConfig(model_dir=str(model_dir), train_steps=steps, seed=seed, log_period=1,
                         progress_bar=False, stop_at_step=stop_at_step),
      data=pipeline.DataConfig(task, {"targets": length}, batch_size),
      model=transformer.TransformerConfig(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                          head_dim=8, mlp_dim=64),
      mesh=partitioning.MeshConfig(shape=mesh_shape, num_devices=num_devices),
      checkpoint=checkpoints.CheckpointConfig(period=checkpoint_period, keep=5),
      eval_config=evaluation.EvalConfig(period=eval_period, num_batches=1, batch_size=8))


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
