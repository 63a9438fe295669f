"""Batched generation with a KV cache: one prefill over right-padded prompts, then a jitted
`lax.while_loop` of one-token decode steps, each example stopping on its own at EOS or its budget.

The prompt batch is the run's prompt format as evaluation scores it (`pipeline.prompt_rows` with a
one-token placeholder continuation: its decoder inputs are exactly what predicts the first new
token), so a prefix-LM run sees the prompt bidirectionally and an encoder-decoder run encodes it,
as in training. The prefill is the training forward (flash-attention path, key ranges keep pads
out of every context) that also fills the cache; steps go through the decode-attention dispatch
and the sampler dispatch (Pallas kernels on GPU/TPU, references on CPU).
"""

import dataclasses
import functools
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from mixjax.data import pipeline
from mixjax.inference import sampling
from mixjax.models import transformer
from mixjax.training import trainer

# Stands in for the first continuation token in `prompt_rows`; only decoder *inputs* are used.
_PLACEHOLDER = 0


def prompt_batch(data: pipeline.DataConfig, prompts: Sequence[Sequence[int]],
                 mode: str | None = None, pad_to: int = 32) -> dict[str, np.ndarray]:
  """Features of `prompts` (token ids before formatting) whose last live decoder input predicts
  the first generated token; right-padded to a multiple of `pad_to`."""
  return pipeline.prompt_rows(data, prompts, [[_PLACEHOLDER]] * len(prompts), pad_to, mode)


def drawable_vocab(data: pipeline.DataConfig) -> int:
  """Ids below this may be generated: the vocabulary, less its extra ids (sentinels, mode tokens)
  for an lm run, which never trains on them; the embedding's padding rows never."""
  vocabulary = data.vocabulary
  return vocabulary.vocab_size - (vocabulary.extra_ids if data.objective == "lm" else 0)


@dataclasses.dataclass(frozen=True)
class Generated:
  """`tokens_BN` int32 (0 after each row's end), `num_tokens_B` (EOS included when drawn) and
  `hit_eos_B` bool, as numpy arrays."""
  tokens_BN: np.ndarray
  num_tokens_B: np.ndarray
  hit_eos_B: np.ndarray


def _row_settings(batch: int, config: sampling.SamplingConfig):
  rows = lambda v, dtype: jnp.full((batch,), v, dtype)  # noqa: E731
  return (rows(config.temperature, jnp.float32), rows(config.top_k, jnp.int32),
          rows(config.top_p, jnp.float32), rows(config.min_p, jnp.float32))


def _step_inputs(model: nn.Module, tokens_B1, positions_B1) -> dict:
  if model.config.architecture == "encoder_decoder":
    return {"encoder_tokens_BS": None, "tokens_BT": tokens_B1, "positions_BT": positions_B1}
  return {"tokens_BT": tokens_B1, "positions_BT": positions_B1}


class _Loop(NamedTuple):
  """The decode loop's carry: step, key, next-token logits, cache, live lengths, per-row state."""
  i: jax.Array
  key: jax.Array
  logits_BV: jax.Array
  cache: Any
  lengths_B: jax.Array
  done_B: jax.Array
  tokens_BN: jax.Array
  hit_eos_B: jax.Array


def _generate(params, features, key, settings, max_new_B, eos_id, *, model, max_new_tokens,
              valid_vocab, attention_impl, sampler_impl, mesh):
  """Prefill, then up to `max_new_tokens` steps; returns (tokens_BN, num_tokens_B, hit_eos_B)."""
  lengths_B = jnp.sum(features["decoder_segment_ids"] > 0, axis=1, dtype=jnp.int32)
  batch, prompt_len = features["decoder_input_tokens"].shape
  prefill = transformer.Decode("prefill", lengths_B, prompt_len + max_new_tokens, attention_impl)
  step = transformer.Decode("step", None, impl=attention_impl, mesh=mesh)
  logits_B1V, variables = model.apply({"params": params}, **trainer.model_inputs(features),
                                      decode=prefill, mutable=["cache"])
  # Ids past `drawable_vocab` (extra ids of lm runs, the embedding's padding) are never drawn.
  invalid_1V = jnp.arange(logits_B1V.shape[-1])[None, :] >= valid_vocab

  def cond(state: _Loop):
    return (state.i < max_new_tokens) & ~jnp.all(state.done_B)

  def body(state: _Loop):
    key, draw_key = jax.random.split(state.key)
    token_B = sampling.sample(draw_key, jnp.where(invalid_1V, -jnp.inf, state.logits_BV),
                              *settings, impl=sampler_impl)
    token_B = jnp.where(state.done_B, 0, token_B)
    hit_eos_B = state.hit_eos_B | (~state.done_B & (token_B == eos_id))
    done_B = state.done_B | hit_eos_B | (state.i + 1 >= max_new_B)
    logits_B1V, variables = model.apply(
        {"params": params, "cache": state.cache},
        **_step_inputs(model, token_B[:, None], state.lengths_B[:, None]),
        decode=dataclasses.replace(step, lengths_B=state.lengths_B), mutable=["cache"])
    return _Loop(state.i + 1, key, logits_B1V[:, 0], variables["cache"], state.lengths_B + 1,
                 done_B, state.tokens_BN.at[:, state.i].set(token_B), hit_eos_B)

  state = jax.lax.while_loop(cond, body, _Loop(
      jnp.int32(0), key, logits_B1V[:, 0], variables["cache"], lengths_B, max_new_B <= 0,
      jnp.zeros((batch, max_new_tokens), jnp.int32), jnp.zeros((batch,), bool)))
  tokens_BN, hit_eos_B = state.tokens_BN, state.hit_eos_B
  written_BN = jnp.arange(max_new_tokens)[None, :] < jnp.minimum(max_new_B, max_new_tokens)[:, None]
  # A row's tokens end at its EOS (included) or its budget.
  after_eos_BN = jnp.cumsum(tokens_BN == eos_id, axis=1) - (tokens_BN == eos_id) > 0
  num_tokens_B = jnp.sum(written_BN & ~after_eos_BN, axis=1)
  return tokens_BN, num_tokens_B, hit_eos_B


class Generator:
  """A model's jitted generation, compiled once per (batch, prompt length) shape.

  Run it under the mesh its parameters live on, `with mesh, nn.logical_axis_rules(rules)`, and
  pass that `mesh` here: decode attention places its `shard_map` on it.
  """

  def __init__(self, model: nn.Module, params, data: pipeline.DataConfig,
               attention_impl: str = "auto", sampler_impl: str = "auto", mesh=None):
    self.model, self.params, self.data = model, params, data
    vocabulary = data.vocabulary
    self._eos_id, self._valid_vocab = vocabulary.eos_id, drawable_vocab(data)
    self._impls = (attention_impl, sampling.resolve_impl(sampler_impl))
    self._mesh = mesh
    self._jitted = {}

  def _fn(self, max_new_tokens: int):
    if max_new_tokens not in self._jitted:
      # On a mesh the outputs (a few ints a row) come back replicated: every host reads all rows,
      # also when the batch's rows live on several processes.
      replicated = None if self._mesh is None else NamedSharding(self._mesh, P())
      self._jitted[max_new_tokens] = jax.jit(functools.partial(
          _generate, model=self.model, max_new_tokens=max_new_tokens,
          valid_vocab=self._valid_vocab, attention_impl=self._impls[0],
          sampler_impl=self._impls[1], mesh=self._mesh), out_shardings=replicated)
    return self._jitted[max_new_tokens]

  def __call__(self, features: Mapping[str, np.ndarray], config: sampling.SamplingConfig,
               max_new_B: np.ndarray | None = None, key=None,
               eos_id: int | None = None) -> Generated:
    """Generates for a prompt batch (`prompt_batch`); `max_new_B` caps rows below
    `config.max_new_tokens`; `key` defaults to `jax.random.key(config.seed)`; `eos_id` (default:
    the vocabulary's; -1: none) ends a row."""
    batch = features["decoder_input_tokens"].shape[0]
    max_new_B = np.full((batch,), config.max_new_tokens, np.int32) if max_new_B is None else max_new_B
    key = jax.random.key(config.seed) if key is None else key
    features = {k: jnp.asarray(v) for k, v in features.items()}
    out = self._fn(config.max_new_tokens)(self.params, features, key,
                                         _row_settings(batch, config), jnp.asarray(max_new_B),
                                         jnp.int32(self._eos_id if eos_id is None else eos_id))
    return Generated(*(np.asarray(x) for x in out))
