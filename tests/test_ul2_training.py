"""UL2 wired through the trainer: prefix-LM (decoder-only) and encoder-decoder runs learn."""

import jax.numpy as jnp
import numpy as np
import pytest

import mixjax_tasks  # noqa: F401
from mixjax import infer
from mixjax.data import pipeline
from mixjax.mixing import stream
from mixjax import vocab as vocab_lib
from mixjax.inference import decoding
from mixjax.models import masks
from mixjax.models import transformer
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from mixjax.training import optim
from tests import helpers


def test_cross_ranges_follow_segments():
  dec_seg = jnp.array([[1, 1, 2, 2, 0]])
  enc_seg = jnp.array([[1, 1, 1, 2, 0, 0]])
  k_start, k_end = masks.cross_ranges(dec_seg, enc_seg)
  np.testing.assert_array_equal(k_start, [[0, 0, 3, 3, 0]])
  np.testing.assert_array_equal(k_end, [[3, 3, 4, 4, 0]])


def test_prefix_lm_batches_mark_the_bidirectional_prefix():
  config = pipeline.DataConfig("mixjax_synthetic_math", {"inputs": 64, "targets": 64},
                               batch_size=4, feature_converter="prefix_lm", objective="ul2")
  batch = next(stream.make_batch_iterator(config, 0, None, 1))
  assert batch["decoder_target_tokens"].shape == (4, 128)
  causal = batch["decoder_causal_attention"]
  weights = batch["decoder_loss_weights"]
  assert causal.sum() > 0 and weights.sum() > 0
  assert not np.any((causal > 0) & (weights > 0) & (batch["decoder_input_tokens"] == 0)[:, :])
  mode_ids = {vocab_lib.mode_token_id(m) for m in vocab_lib.MODE_TOKENS}
  assert mode_ids & set(np.unique(batch["decoder_target_tokens"]).tolist())


@pytest.fixture(scope="module")
def small_mix():
  """Two domains keep these runs cheap (each domain adds a UL2 pipeline and an eval set)."""
  import seqio
  seqio.MixtureRegistry.remove("test_ul2_math_code")
  seqio.MixtureRegistry.add("test_ul2_math_code",
                            [("mixjax_synthetic_math", 1.0), ("mixjax_synthetic_code", 1.0)])
  return "test_ul2_math_code"


@pytest.mark.parametrize("architecture,converter,lengths", [
    ("decoder", "prefix_lm", {"inputs": 48, "targets": 48}),
    ("encoder_decoder", "enc_dec", {"inputs": 64, "targets": 32}),
])
def test_tiny_ul2_run_infilling_loss_falls(tmp_path, small_mix, architecture, converter, lengths):
  kwargs = helpers.tiny_train_kwargs(tmp_path, small_mix, steps=16, eval_period=8,
                                     checkpoint_period=0, mesh_shape=(2, 1, 2), num_devices=4,
                                     batch_size=8)
  kwargs["data"] = pipeline.DataConfig(small_mix, lengths, batch_size=8,
                                       feature_converter=converter, objective="ul2")
  kwargs["model"] = transformer.TransformerConfig(
      d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
      architecture=architecture)
  kwargs["optimizer"] = optim.OptimizerConfig(learning_rate=1e-2, warmup_steps=2)
  loop.train(**kwargs)
  evals = [m for m in metrics_lib.read_metrics(tmp_path) if "eval/math/loss" in m]
  assert [m["step"] for m in evals] == [8, 16]
  for domain in ("math", "code"):
    assert evals[1][f"eval/{domain}/loss"] < evals[0][f"eval/{domain}/loss"]
  assert "probe/math/arithmetic/accuracy" in evals[-1]
  if architecture == "decoder":  # the trained run fills spans through the inference entry point
    outputs = infer.infer(str(tmp_path), ["Q: 12 + <X> = 15", "x = 3"], mode="NLU",
                          max_new_tokens=8)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)


def test_prompt_encoding_round_trips_sentinels_and_modes():
  ids = decoding.encode_prompt("a <X> b <X>", mode="NLG")
  assert ids[0] == vocab_lib.mode_token_id("[NLG]")
  assert vocab_lib.sentinel_id(0) in ids and vocab_lib.sentinel_id(1) in ids
  assert decoding.decode_tokens(ids) == "[NLG]a <X0> b <X1>"
  assert decoding.decode_tokens(ids + [1, 70]) == "[NLG]a <X0> b <X1>"  # stops at EOS
