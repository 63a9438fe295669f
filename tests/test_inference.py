"""KV-cached generation against recomputation, batch invariance, per-example EOS, the sampler's
law through `generate`, and the sharded decode path (tiny random models)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mixjax.data import pipeline
from mixjax.inference import generate
from mixjax.inference import sampling
from mixjax.kernels import decode_attention as decode_lib
from mixjax.kernels import sampling as sampling_lib
from mixjax.models import attention
from mixjax.models import transformer
from mixjax.training import partitioning
from mixjax.training import trainer
# Unoptimised XLA compiles: these tests are compile-bound; numerics are unchanged.
from tests.test_flash_attention import _unoptimized_compiles  # noqa: F401

# (architecture, feature converter, objective, task feature lengths, prompt mode)
LAYOUTS = {
    "lm": ("decoder", "lm", "lm", {"targets": 64}, None),
    "prefix_lm": ("decoder", "prefix_lm", "ul2", {"inputs": 32, "targets": 32}, "S2S"),
    "enc_dec": ("encoder_decoder", "enc_dec", "ul2", {"inputs": 32, "targets": 32}, "NLU"),
}
# Mixed lengths: the longest pads the others, which must never see the pads.
PROMPTS = [[72, 101, 108], [65] * 11, [66, 67, 68, 69, 70]]
NEW_TOKENS = 6


@functools.lru_cache(maxsize=None)
def _generator(layout):
  """One generator per layout, so that tests of one shape share its compilation."""
  model, params, data, _ = _tiny(layout)
  return generate.Generator(model, params, data)


@functools.lru_cache(maxsize=None)
def _tiny(layout):
  """(model, params, data config, mode): a random tiny model with peaked logits (scaled
  embeddings), so that greedy paths are far from ties."""
  architecture, converter, objective, lengths, mode = LAYOUTS[layout]
  data = pipeline.DataConfig("unused", lengths, 8, feature_converter=converter,
                             objective=objective)
  config = transformer.TransformerConfig(vocab_size=384, d_model=32, num_layers=1, num_heads=4,
                                         num_kv_heads=2, head_dim=8, mlp_dim=64,
                                         architecture=architecture)
  model = transformer.build_model(config)
  dummy = {"decoder_input_tokens": jnp.zeros((1, 8), jnp.int32)}
  if architecture == "encoder_decoder":
    dummy["encoder_input_tokens"] = dummy["decoder_input_tokens"]
  params = nn.unbox(model.init(jax.random.key(0), **trainer.model_inputs(dummy))["params"])
  params = {**params, "embedding": 3 * params["embedding"]}
  return model, params, data, mode


def _recompute_greedy(model, params, data, prompt, mode, steps):
  """Greedy tokens by a full forward over prompt + generated at every step, in the training
  features (`prompt_rows`), one prompt at a time: the reference the cache must reproduce."""
  valid = generate.drawable_vocab(data)
  generated = []
  forward = jax.jit(lambda feats: model.apply({"params": params}, **trainer.model_inputs(feats)))
  for _ in range(steps):
    feats = pipeline.prompt_rows(data, [prompt], [generated + [0]], 32, mode)
    last = int(feats["decoder_segment_ids"].sum()) - 1
    logits_V = forward({k: jnp.asarray(v) for k, v in feats.items()})[0, last, :valid]
    generated.append(int(jnp.argmax(logits_V)))
  return generated


def _greedy(layout, prompts, **kwargs):
  model, params, data, mode = _tiny(layout)
  gen = generate.Generator(model, params, data, **kwargs) if kwargs else _generator(layout)
  out = gen(generate.prompt_batch(data, prompts, mode), sampling.SamplingConfig(
      max_new_tokens=NEW_TOKENS))
  return [row[:n].tolist() for row, n in zip(out.tokens_BN, out.num_tokens_B)], out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cached_greedy_equals_recomputation_for_a_mixed_length_batch(layout):
  model, params, data, mode = _tiny(layout)
  got, out = _greedy(layout, PROMPTS)
  assert not out.hit_eos_B.any() and (out.num_tokens_B == NEW_TOKENS).all()
  for prompt, tokens in zip(PROMPTS, got):
    assert tokens == _recompute_greedy(model, params, data, prompt, mode, NEW_TOKENS)
  assert len({tuple(t) for t in got}) > 1  # the prompts matter


def test_a_prompt_completes_the_same_alone_and_in_a_batch():
  batch, _ = _greedy("lm", PROMPTS)
  alone, _ = _greedy("lm", PROMPTS[2:])
  assert alone[0] == batch[2]


def test_eos_stops_each_example_on_its_own():
  model, params, data, mode = _tiny("lm")
  full, _ = _greedy("lm", PROMPTS)
  # Declare row 0's third token the EOS: row 0 stops there, the others run on unchanged.
  eos = full[0][2]
  assert all(eos not in row for row in full[1:])
  out = _generator("lm")(generate.prompt_batch(data, PROMPTS, mode),
                         sampling.SamplingConfig(max_new_tokens=NEW_TOKENS), eos_id=eos)
  assert out.num_tokens_B.tolist() == [3, NEW_TOKENS, NEW_TOKENS]
  assert out.hit_eos_B.tolist() == [True, False, False]
  assert out.tokens_BN[0].tolist() == full[0][:3] + [0] * (NEW_TOKENS - 3)
  assert [row[:n].tolist() for row, n in zip(out.tokens_BN[1:], out.num_tokens_B[1:])] == full[1:]


@pytest.mark.slow
def test_sharded_decode_equals_one_device():
  """Rows over `data`, heads over `tensor` (decode attention inside shard_map): same tokens."""
  model, params, data, mode = _tiny("prefix_lm")
  mesh_config = partitioning.MeshConfig(shape=(2, 1, 2), num_devices=4)
  mesh = partitioning.make_mesh(mesh_config)
  prompts = PROMPTS + [[80, 81]]
  with mesh, nn.logical_axis_rules(mesh_config.rules):
    gen = generate.Generator(model, params, data, mesh=mesh)
    feats = trainer.global_batch(mesh, generate.prompt_batch(data, prompts, mode))
    out = gen(feats, sampling.SamplingConfig(max_new_tokens=NEW_TOKENS))
  one, _ = _greedy("prefix_lm", prompts)
  assert [row[:n].tolist() for row, n in zip(out.tokens_BN, out.num_tokens_B)] == one


@pytest.mark.slow
def test_sampled_first_tokens_follow_the_sampler_distribution():
  """Chi-square: 1024 copies of one prompt, one sampled token each, against the exact law of the
  sampler's kept set over the model's next-token logits (computed by a full forward)."""
  model, params, data, mode = _tiny("lm")
  settings = dict(temperature=0.8, top_k=12, top_p=0.95, min_p=0.0)
  draws = 1024
  out = _generator("lm")(generate.prompt_batch(data, [PROMPTS[0]] * draws, mode),
            sampling.SamplingConfig(max_new_tokens=1, seed=3, **settings))
  feats = pipeline.prompt_rows(data, [PROMPTS[0]], [[0]], 32, mode)
  last = int(feats["decoder_segment_ids"].sum()) - 1
  logits_1V = model.apply({"params": params}, **trainer.model_inputs(
      {k: jnp.asarray(v) for k, v in feats.items()}))[:, last]
  logits_1V = jnp.where(jnp.arange(logits_1V.shape[-1]) < generate.drawable_vocab(data),
                        logits_1V, -jnp.inf)
  keep_V = np.asarray(sampling_lib.reference_sampling_mask(logits_1V, **settings))[0]
  probs_V = np.asarray(jax.nn.softmax(jnp.where(keep_V, logits_1V[0] / 0.8, -jnp.inf)), np.float64)
  tokens = out.tokens_BN[:, 0]
  assert keep_V[tokens].all() and keep_V.sum() > 3
  counts, expected = np.bincount(tokens, minlength=keep_V.size)[keep_V], probs_V[keep_V] * draws
  rare = expected < 5  # pool rare tokens: every cell expects >= 5 draws
  counts = np.append(counts[~rare], counts[rare].sum())
  expected = np.append(expected[~rare], expected[rare].sum())
  if expected[-1] == 0:
    counts, expected = counts[:-1], expected[:-1]
  expected *= draws / expected.sum()
  assert stats.chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["lm", "enc_dec"])
def test_pallas_kernels_through_generate_match_the_references(layout):
  """Decode attention and the sampler as Pallas kernels (interpret mode on CPU) in the loop."""
  reference, _ = _greedy(layout, PROMPTS, attention_impl="xla", sampler_impl="xla")
  kernels, _ = _greedy(layout, PROMPTS, attention_impl="pallas", sampler_impl="pallas")
  assert kernels == reference


def test_xla_decode_attention_matches_the_kernel_reference():
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q_BHD = jax.random.normal(kq, (4, 8, 16))
  k_BSKD, v_BSKD = (jax.random.normal(key, (4, 40, 2, 16)) for key in (kk, kv))
  lengths_B = jnp.asarray([0, 1, 17, 40])
  dead_BS11 = (jnp.arange(40)[None, :] >= lengths_B[:, None])[:, :, None, None]
  got = jax.jit(attention.xla_decode_attention)(q_BHD, jnp.where(dead_BS11, jnp.nan, k_BSKD),
                                       jnp.where(dead_BS11, jnp.nan, v_BSKD), lengths_B)
  want = jax.jit(decode_lib.reference_decode_attention)(q_BHD, k_BSKD, v_BSKD, lengths_B)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert not np.asarray(got[0]).any()  # no live key: zeros


def test_bad_sampling_settings_are_rejected_by_name_and_range():
  with pytest.raises(ValueError, match=r"temperature=-1 must be >= 0 \(0 is greedy\)"):
    sampling.SamplingConfig(temperature=-1)
  with pytest.raises(ValueError, match=r"top_p=0 must be in \(0, 1\].*max_new_tokens=0 must be"):
    sampling.SamplingConfig(top_p=0, max_new_tokens=0)
