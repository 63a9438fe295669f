"""Split-K decode attention (interpret mode on CPU) against the pure-JAX reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from mixjax.kernels import decode_attention as da
# The autouse fixture applies here too once imported (interpret mode is compile-bound).
from tests.test_flash_attention import _assert_close, _unoptimized_compiles  # noqa: F401

# 32-key blocks and at least 16 programs: several splits per sequence even for short caches.
SMALL = da.DecodeBlockSizes(block_k=32, min_programs=16)


@functools.partial(jax.jit, static_argnames=("platform", "scale"))
def _decode(q, k, v, lengths, platform=None, scale=None):
  return da.decode_attention(q, k, v, lengths, scale=scale, interpret=True, block_sizes=SMALL,
                             platform=platform)


_reference = jax.jit(da.reference_decode_attention, static_argnames=("scale",))


def _inputs(seed, batch, heads, kv_heads, head_dim, max_len, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (batch, heads, head_dim), dtype),
          jax.random.normal(kk, (batch, max_len, kv_heads, head_dim), dtype),
          jax.random.normal(kv, (batch, max_len, kv_heads, head_dim), dtype))


# Lengths: empty, one key, a split boundary, a block boundary ± 1, and the full cache.
LENGTHS = [0, 1, 64, 95, 97, 127, 192, 200]


@pytest.mark.parametrize("heads,kv_heads", [(8, 2), (4, 4)])
def test_matches_reference(heads, kv_heads):
  q, k, v = _inputs(0, len(LENGTHS), heads, kv_heads, 32, 200)
  lengths = jnp.asarray(LENGTHS, jnp.int32)
  out = _decode(q, k, v, lengths)
  _assert_close(out, _reference(q, k, v, lengths), 2e-5)
  assert np.all(np.asarray(out)[0] == 0)  # length 0 attends to nothing.


def test_lengths_beyond_cache_clip_and_scale():
  q, k, v = _inputs(1, 2, 2, 1, 16, 129)
  lengths = jnp.asarray([129, 500], jnp.int32)
  out = _decode(q, k, v, lengths, scale=0.5)
  _assert_close(out, _reference(q, k, v, jnp.minimum(lengths, 129), scale=0.5), 2e-5)


def test_garbage_past_length_is_ignored():
  """NaN in the dead part of the cache (stale or uninitialised slots) must not leak through."""
  q, k, v = _inputs(2, 3, 4, 2, 32, 256)
  lengths = jnp.asarray([1, 100, 160], jnp.int32)
  dead = (jnp.arange(256)[None, :] >= lengths[:, None])[..., None, None]
  out = _decode(q, jnp.where(dead, jnp.nan, k), jnp.where(dead, jnp.nan, v), lengths)
  _assert_close(out, _reference(q, k, v, lengths), 2e-5)


def test_bfloat16():
  q, k, v = _inputs(3, 4, 8, 1, 64, 256, jnp.bfloat16)
  lengths = jnp.asarray([256, 3, 129, 64], jnp.int32)
  out = _decode(q, k, v, lengths)
  assert out.dtype == jnp.bfloat16
  _assert_close(out, _reference(q, k, v, lengths), 2e-2)


def test_tpu_launch_in_interpret_mode():
  q, k, v = _inputs(4, 2, 4, 2, 32, 200)
  lengths = jnp.asarray([37, 200], jnp.int32)
  _assert_close(_decode(q, k, v, lengths, platform="tpu"), _reference(q, k, v, lengths), 2e-5)


def test_bad_shapes_are_rejected():
  q, k, v = _inputs(0, 2, 3, 2, 8, 16)
  with pytest.raises(ValueError, match="kv_heads=2 must divide q_heads=3"):
    da.decode_attention(q, k, v, jnp.ones((2,), jnp.int32))
  with pytest.raises(ValueError, match=r"lengths \(3,\) must be \[batch\]"):
    da.decode_attention(q[:, :2], k, v, jnp.ones((3,), jnp.int32))


@pytest.mark.parametrize("platform,target", [("gpu", "cuda"), ("tpu", "tpu")])
def test_lowers_for_accelerators(platform, target):
  q = jax.ShapeDtypeStruct((8, 32, 128), jnp.bfloat16)
  cache = jax.ShapeDtypeStruct((8, 4096, 8, 128), jnp.bfloat16)
  lengths = jax.ShapeDtypeStruct((8,), jnp.int32)
  step = jax.jit(functools.partial(da.decode_attention, interpret=False, platform=platform))
  exported = export.export(step, platforms=[target], disabled_checks=[
      export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(q, cache, cache, lengths)
  assert exported.out_avals[0].shape == (8, 32, 128)
