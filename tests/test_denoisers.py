"""Property tests for the UL2 mixture of denoisers (`mixjax.data.objectives.denoisers`).

Documents are random byte-token sequences (ids 3..258, so no mode token or sentinel occurs in
them). The default mixture's examples are computed once per module and shared by the tests.
"""

import collections
import functools
import statistics

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from mixjax.data.objectives import denoisers
from mixjax import vocab
from tests import helpers

ENC_DEC = {"inputs": 512, "targets": 512}
DEC_ONLY = {"targets": 1024}
NUM_DOCS = 120
LOWEST_SENTINEL = vocab.sentinel_id(vocab.max_sentinels() - 1)
MODE_IDS = {vocab.mode_token_id(t) for t in vocab.MODE_TOKENS}
# Two-sided z for a false-alarm probability of 1e-6 per check: these tests should never flake.
Z = statistics.NormalDist().inv_cdf(1 - 0.5e-6)


def _features():
  v = vocab.get_vocabulary()
  return {"inputs": seqio.Feature(v), "targets": seqio.Feature(v)}


@functools.lru_cache(maxsize=None)
def _documents(num_docs=NUM_DOCS, max_length=4000, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(rng.integers(3, 259, size=rng.integers(1, max_length + 1)).astype(np.int32)
               for _ in range(num_docs))


def _dataset(docs):
  docs = tf.RaggedTensor.from_row_lengths(np.concatenate(docs), [d.size for d in docs])
  return tf.data.Dataset.from_tensor_slices(docs).map(lambda x: {"targets": x})


def _denoise(docs, sequence_length=ENC_DEC, seed=1, **kwargs):
  with seqio.utils.map_seed_manager(seed):
    return denoisers.ul2_denoise(_dataset(docs), sequence_length, _features(),
                                 denoiser_key="denoiser", **kwargs)


def _examples(dataset):
  return list(dataset.as_numpy_iterator())


LENGTHS = {"enc_dec": ENC_DEC, "dec_only": DEC_ONLY}


@functools.lru_cache(maxsize=None)
def _run(lengths="enc_dec", use_mode_tokens=True):
  """Examples of the default mixture over `_documents()`, cached across tests."""
  return _examples(_denoise(_documents(), LENGTHS[lengths], use_mode_tokens=use_mode_tokens))


def _flat(examples):
  """All inputs and targets tokens, example after example."""
  return np.concatenate([np.concatenate([e["inputs"], e["targets"]]) for e in examples])


def _is_sentinel(tokens):
  return tokens >= LOWEST_SENTINEL


def _strip_mode(inputs):
  return inputs[1:] if inputs.size and inputs[0] in MODE_IDS else inputs


def _reconstruct(example):
  """The chunk an example came from: each input sentinel replaced by its target span."""
  return helpers.reconstruct_chunk(example["inputs"], example["targets"])


def _by_denoiser(examples):
  out = collections.defaultdict(list)
  for ex in examples:
    out[denoisers.DEFAULT_DENOISERS[ex["denoiser"]].name].append(ex)
  return out


@pytest.mark.parametrize("lengths", LENGTHS)
def test_inputs_and_targets_reconstruct_the_documents(lengths):
  examples = _run(lengths)
  rebuilt = np.concatenate([_reconstruct(ex) for ex in examples])
  np.testing.assert_array_equal(rebuilt, np.concatenate(_documents()))


@pytest.mark.parametrize("lengths", LENGTHS)
def test_examples_fit_their_lengths_with_eos(lengths):
  examples, sequence_length = _run(lengths), LENGTHS[lengths]
  inputs = np.array([ex["inputs"].size + 1 for ex in examples])
  targets = np.array([ex["targets"].size + 1 for ex in examples])
  if "inputs" in sequence_length:
    used = min(inputs.max() / sequence_length["inputs"], targets.max() / sequence_length["targets"])
  else:
    used = (inputs + targets).max() / sequence_length["targets"]
  assert used <= 1
  assert used >= 0.97  # the budget is used, not just respected: full chunks nearly fill it


def _span_corruption_stats(examples):
  """Per example: chunk length n, noise tokens, noise spans."""
  spans = np.array([_is_sentinel(ex["inputs"]).sum() for ex in examples])
  noise = np.array([(~_is_sentinel(ex["targets"])).sum() for ex in examples])
  nonnoise = np.array([(~_is_sentinel(_strip_mode(ex["inputs"]))).sum() for ex in examples])
  return nonnoise + noise, noise, spans


@pytest.mark.parametrize("denoiser", [d for d in denoisers.DEFAULT_DENOISERS if not d.prefix_lm],
                         ids=lambda d: d.name)
def test_corruption_rate_and_mean_span_length_match_spec(denoiser):
  """Measured over all chunks of one denoiser, against bounds derived per chunk.

  Noise is rounded per chunk (as in T5): |noise - n * rate| <= 1/2, or < 1 where clamped to
  [1, n - 1]. The span count is floor(x + U), x = noise / mean, clamped to >= 1: its mean is
  max(x, 1) and its variance frac(x)(1 - frac(x)) (0 when clamped), so the total span count is
  within Z standard deviations of the sum of the means.
  """
  n, noise, spans = _span_corruption_stats(_by_denoiser(_run())[denoiser.name])
  rate, mean = denoiser.corruption_rate, denoiser.mean_span_length
  noise_slack = np.where((n * rate < 0.5) | (n * rate > n - 1.5), 1.0, 0.5).sum()
  assert abs(noise.sum() - rate * n.sum()) <= noise_slack
  x = noise / mean
  assert (spans <= np.ceil(x)).all() and (spans >= np.minimum(np.floor(x), 1)).all()
  frac = np.where(x >= 1, x - np.floor(x), 0.0)
  expected_spans, std = np.maximum(x, 1).sum(), np.sqrt((frac * (1 - frac)).sum())
  assert abs(spans.sum() - expected_spans) <= Z * std
  # Full-length chunks are never clamped, so there the expected mean span length is the spec's
  # exactly; only short document tails (one span at least) pull the overall mean below it.
  full = n == n.max()
  assert (x[full] >= 1).all()
  np.testing.assert_allclose(noise[full].sum() / np.maximum(x[full], 1).sum(), mean)


def test_span_placement_is_uniform():
  """First and last noise spans have the mean and variance of a part of a uniform composition.

  Splitting N noise tokens into k spans uniformly gives part lengths 1 + Y, Y Dirichlet-
  multinomial(m = N - k, alpha = 1^k): E = N / k, Var = m (k - 1)(m + k) / (k^2 (k + 1)).
  """
  docs = _documents(num_docs=100, max_length=8000, seed=3)
  with seqio.utils.map_seed_manager(5):
    examples = _examples(denoisers.span_corruption(_dataset(docs), ENC_DEC, _features()))
  _, noise, spans = _span_corruption_stats(examples)
  m = noise - spans
  variance = (m * (spans - 1) * (m + spans) / (spans**2 * (spans + 1))).sum()
  for pick in (0, -1):
    lengths = [np.diff(np.append(np.flatnonzero(_is_sentinel(ex["targets"])),
                                 ex["targets"].size))[pick] - 1 for ex in examples]
    assert abs(np.sum(lengths) - (noise / spans).sum()) <= Z * np.sqrt(variance), pick


def test_empty_and_tiny_documents():
  """Empty documents give no example; 1- and 2-token documents still round-trip."""
  docs = [np.arange(3, 3 + n, dtype=np.int32) for n in (0, 1, 0, 2, 1, 0)] * 30
  examples = _examples(_denoise(docs))
  assert len(examples) == sum(d.size > 0 for d in docs)
  rebuilt = np.concatenate([_reconstruct(ex) for ex in examples])
  np.testing.assert_array_equal(rebuilt, np.concatenate(docs))


def _register_ul2_task(name, texts):
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices({"text": texts}),
      splits=("train",), num_input_examples={"train": len(texts)})
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, source=source, output_features=_features(), preprocessors=[
      functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
      seqio.preprocessors.tokenize, denoisers.ul2_denoise,
      seqio.preprocessors.append_eos_after_trim])


def test_seqio_task_is_deterministic_per_seed_and_shard():
  """Through `Task.get_dataset`: each host's shard is a pure function of (seed, shard)."""
  rng = np.random.default_rng(6)
  texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 400, size=24)]
  task = _register_ul2_task("mixjax_test_ul2_task", texts)
  def get(seed, index=0, num_shards=2):
    return _examples(task.get_dataset(ENC_DEC, shuffle=False, seed=seed,
                                      shard_info=seqio.ShardInfo(index, num_shards)))
  first_shard = _flat(get(3))
  np.testing.assert_array_equal(first_shard, _flat(get(3)))
  assert first_shard.tolist() != _flat(get(4)).tolist()
  whole = get(3, 0, 1)
  eos = vocab.get_vocabulary().eos_id
  assert all(ex["inputs"][-1] == eos and ex["targets"][-1] == eos for ex in whole)
  rebuilt = np.concatenate([_reconstruct({k: ex[k][:-1] for k in ("inputs", "targets")})
                            for ex in whole])
  np.testing.assert_array_equal(rebuilt, np.frombuffer("".join(texts).encode(), np.uint8) + 3)


def test_sentinels_are_unique_and_descending():
  for ex in _run():
    sentinels = [t for t in ex["inputs"] if t >= LOWEST_SENTINEL]
    expected = [vocab.sentinel_id(i) for i in range(len(sentinels))]
    assert sentinels == expected
    assert [t for t in ex["targets"] if t >= LOWEST_SENTINEL] == expected


def test_routing_matches_rates():
  """Every chunk is routed i.i.d., so each denoiser's count is binomial around its rate."""
  docs = _documents(num_docs=10_000, max_length=8, seed=4)  # one chunk per document
  ids = np.concatenate(list(_denoise(docs).map(lambda x: x["denoiser"]).batch(4096)
                            .as_numpy_iterator()))
  assert ids.size == len(docs)
  rates = np.array([d.rate for d in denoisers.DEFAULT_DENOISERS])
  p = rates / rates.sum()
  measured = np.bincount(ids, minlength=p.size) / ids.size
  np.testing.assert_array_less(np.abs(measured - p), Z * np.sqrt(p * (1 - p) / ids.size))


@pytest.mark.parametrize("use_mode_tokens", [True, False])
def test_mode_tokens_present_per_flag(use_mode_tokens):
  examples = _run(use_mode_tokens=use_mode_tokens)
  for ex in examples:
    denoiser = denoisers.DEFAULT_DENOISERS[ex["denoiser"]]
    others = np.concatenate([ex["inputs"][int(use_mode_tokens):], ex["targets"]])
    assert not MODE_IDS.intersection(others.tolist())
    if use_mode_tokens:
      assert ex["inputs"][0] == vocab.mode_token_id(denoiser.mode_token)


def test_same_seed_same_examples_other_seed_different():
  docs = _documents()[:20]
  first, again, other = (_examples(_denoise(docs, seed=s)) for s in (7, 7, 8))
  np.testing.assert_array_equal(_flat(first), _flat(again))
  assert [e["denoiser"] for e in first] == [e["denoiser"] for e in again]
  assert _flat(first).tolist() != _flat(other).tolist()


def _nonpad_counts(arrays):
  return np.bincount(np.concatenate([a[a != 0] for a in arrays]),
                     minlength=vocab.get_vocabulary().vocab_size)


@pytest.mark.parametrize("lengths", LENGTHS)
def test_packing_keeps_every_token(lengths):
  """Packing trims what does not fit, so equal token counts mean nothing overflowed."""
  features, sequence_length = _features(), LENGTHS[lengths]
  ds = _denoise(_documents()[:40], sequence_length)
  ds = seqio.preprocessors.append_eos_after_trim(ds, features, sequence_length)
  examples = _examples(ds)
  if "inputs" in sequence_length:
    converter = seqio.EncDecFeatureConverter(pack=True)
    keys = {"encoder_input_tokens": ["inputs"], "decoder_target_tokens": ["targets"]}
    task_lengths = sequence_length
  else:
    # The prefix-LM converter only uses the sum of the two lengths; ul2_denoise budgets the sum.
    converter = seqio.PrefixLMFeatureConverter(pack=True, apply_length_check=False)
    keys = {"decoder_target_tokens": ["inputs", "targets"]}
    half = sequence_length["targets"] // 2
    task_lengths = {"inputs": half, "targets": sequence_length["targets"] - half}
  packed = _examples(converter(ds, task_lengths).batch(256))
  for packed_key, example_keys in keys.items():
    rows = np.concatenate([b[packed_key] for b in packed])
    assert rows.shape[1] == sum(task_lengths[k] for k in example_keys)
    expected = _nonpad_counts([ex[k] for ex in examples for k in example_keys])
    np.testing.assert_array_equal(_nonpad_counts(list(rows)), expected)


def test_raw_lengths_are_the_longest_that_fit():
  """Worst-case inputs/targets (+EOS) of a raw-length chunk fit; one token more would not."""
  lengths = denoisers.raw_lengths(denoisers.DEFAULT_DENOISERS, {"inputs": 512, "targets": 114},
                                  _features(), use_mode_tokens=False)
  assert lengths["R1"] == 563  # T5 says 568, rounding the span count; we budget for rounding up.
  for d in denoisers.DEFAULT_DENOISERS:
    inputs, targets, _ = d.max_lengths(np.array([lengths[d.name], lengths[d.name] + 1]))
    fits = (inputs + 1 <= 512) & (targets + 1 <= 114)
    assert fits.tolist() == [True, False], d.name


def test_raw_lengths_quoted_in_the_module_docstring():
  quoted = {(("inputs", 512), ("targets", 512)): dict(R1=566, R2=587, X1=764, X2=907, X3=598,
                                                      X4=1004, S=511),
            (("targets", 1024),): dict(R1=927, R2=983, X1=765, X2=907, X3=1015, X4=1005, S=1021)}
  for lengths, expected in quoted.items():
    got = denoisers.raw_lengths(denoisers.DEFAULT_DENOISERS, dict(lengths), _features())
    assert got == expected


def test_spans_are_capped_at_the_number_of_sentinels():
  dense = denoisers.Denoiser("dense", rate=1.0, mode_token="[NLG]", mean_span_length=1,
                             corruption_rate=0.5)
  examples = _examples(_denoise(_documents()[:4], {"inputs": 2048, "targets": 2048},
                                denoisers=(dense,)))
  sentinels = [int(_is_sentinel(ex["inputs"]).sum()) for ex in examples]
  assert max(sentinels) == vocab.max_sentinels()
  assert all(ex["inputs"].size < 2048 and ex["targets"].size < 2048 for ex in examples)


def test_gin_configures_the_mixture():
  config = """
    import mixjax.data.objectives.denoisers
    long/Denoiser.name = "long"
    long/Denoiser.rate = 3.0
    long/Denoiser.mode_token = "[NLG]"
    long/Denoiser.mean_span_length = 32
    long/Denoiser.corruption_rate = 0.25
    prefix/Denoiser.name = "prefix"
    prefix/Denoiser.rate = 1.0
    prefix/Denoiser.mode_token = "[S2S]"
    prefix/Denoiser.prefix_lm = True
    ul2_denoise.denoisers = [@long/Denoiser(), @prefix/Denoiser()]
    ul2_denoise.use_mode_tokens = False
    ul2_denoise.denoiser_key = "which"
  """
  try:
    gin.parse_config(config)
    with seqio.utils.map_seed_manager(1):
      examples = _examples(denoisers.ul2_denoise(_dataset(_documents()[:40]), ENC_DEC,
                                                 _features()))
  finally:
    gin.clear_config()
  assert {int(ex["which"]) for ex in examples} == {0, 1}
  for ex in examples:
    assert not MODE_IDS.intersection(ex["inputs"].tolist())
    has_sentinels = bool(_is_sentinel(ex["targets"]).any())
    assert has_sentinels == (ex["which"] == 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=-1.0), "rate must be"),
    (dict(corruption_rate=0.0), "corruption_rate must be in"),
    (dict(corruption_rate=1.0), "corruption_rate must be in"),
    (dict(corruption_rate=1.5), "corruption_rate must be in"),
    (dict(mean_span_length=0.5), "mean_span_length must be"),
    (dict(mode_token="[XYZ]"), r"unknown mode token '\[XYZ\]'"),
    (dict(prefix_lm=True), "prefix-LM denoiser takes no"),
])
def test_bad_denoiser_config_is_a_clear_error(kwargs, message):
  args = dict(name="bad", rate=1.0, mode_token="[NLU]", mean_span_length=3.0,
              corruption_rate=0.15) | kwargs
  with pytest.raises(ValueError, match=f"'bad'.*{message}"):
    denoisers.Denoiser(**args)


@pytest.mark.parametrize("kwargs, sequence_length, message", [
    (dict(denoisers=()), ENC_DEC, "at least one denoiser with rate > 0"),
    (dict(denoisers=(denoisers.Denoiser("z", 0.0, "[NLU]", 3, 0.15),)), ENC_DEC,
     "at least one denoiser"),
    ({}, {"inputs": 512}, r"needs sequence_length\['targets'\]"),
    ({}, {"targets": 2}, "cannot fit even one token"),
])
def test_bad_mixture_is_a_clear_error(kwargs, sequence_length, message):
  with pytest.raises(ValueError, match=message):
    denoisers.ul2_denoise(_dataset(_documents()[:2]), sequence_length, _features(), **kwargs)
