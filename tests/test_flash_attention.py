"""Pallas flash attention (interpret mode on CPU) against the XLA reference and jax.nn.

Masks come from `mixjax.models.masks` over random packed layouts: single-token documents, padding,
random prefix-LM prefixes, plus arbitrary (non-monotone) ranges. Small tiles make every case cross
several query and key blocks, so skipping and the masked/unmasked split are both exercised.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from mixjax.kernels import flash_attention as fa
from mixjax.models import masks

SMALL = fa.BlockSizes(block_q=32, block_k=32, block_q_dq=32, block_k_dq=16, block_q_dkv=16,
                      block_k_dkv=32)
F32_TOL, BF16_TOL = 2e-5, 2e-2


def _segments(rng, batch, length, max_doc, pad):
  """int32 [batch, length]: packed documents of 1..max_doc tokens, then `pad` padding tokens."""
  ids = np.zeros((batch, length), np.int32)
  for b in range(batch):
    pos, seg = 0, 1
    while pos < length - pad:
      n = min(int(rng.integers(1, max_doc + 1)), length - pad - pos)
      ids[b, pos:pos + n] = seg
      pos, seg = pos + n, seg + 1
  return jnp.asarray(ids)


def _prefix_mask(rng, segment_ids):
  """Random prefix of each document marked as inputs (bidirectional) for prefix-LM."""
  ids = np.asarray(segment_ids)
  mask = np.zeros(ids.shape, bool)
  for b in range(ids.shape[0]):
    for seg in set(ids[b][ids[b] > 0].tolist()):
      where = np.flatnonzero(ids[b] == seg)
      mask[b, where[:int(rng.integers(0, len(where) + 1))]] = True
  return jnp.asarray(mask)


def _ranges(kind, rng, batch, length, max_doc=40, pad=7):
  if kind == "causal":
    return masks.causal_ranges(jnp.ones((batch, length), jnp.int32))
  segment_ids = _segments(rng, batch, length, max_doc, pad)
  if kind == "packed":
    return masks.causal_ranges(segment_ids)
  if kind == "prefix":
    return masks.prefix_lm_ranges(segment_ids, _prefix_mask(rng, segment_ids))
  if kind == "bidirectional":
    return masks.bidirectional_ranges(segment_ids)
  raise ValueError(kind)


def _qkv(key, batch, q_len, kv_len, heads, kv_heads, head_dim, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(key, 3)
  return (jax.random.normal(kq, (batch, q_len, heads, head_dim), dtype),
          jax.random.normal(kk, (batch, kv_len, kv_heads, head_dim), dtype),
          jax.random.normal(kv, (batch, kv_len, kv_heads, head_dim), dtype))


def _assert_close(x, ref, tol):
  """Max error relative to the reference's magnitude (outputs and gradients are O(1)..O(10))."""
  x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
  assert np.all(np.isfinite(x))
  err = np.max(np.abs(x - ref)) / max(1.0, np.max(np.abs(ref)))
  assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


def _loss(attention, q, k, v, start, end):
  # A non-linear readout so every output element gets a different cotangent.
  out = attention(q, k, v, start, end).astype(jnp.float32)
  weights_111D = jnp.cos(jnp.arange(out.shape[-1], dtype=jnp.float32))[None, None, None, :]
  return jnp.sum(jnp.sin(out) * weights_111D)


def _kernel(platform=None, scale=None):
  return functools.partial(fa.flash_attention, block_sizes=SMALL, interpret=True,
                           platform=platform, scale=scale)


# Module-level jits so tests with equal shapes share one compilation (interpret mode is
# compile-bound: seconds to compile, milliseconds to run).
@functools.partial(jax.jit, static_argnames=("platform", "scale"))
def _forward(q, k, v, start, end, platform=None, scale=None):
  return _kernel(platform, scale)(q, k, v, start, end)


@functools.partial(jax.jit, static_argnames=("platform",))
def _grads(q, k, v, start, end, platform=None):
  return jax.grad(functools.partial(_loss, _kernel(platform)), argnums=(0, 1, 2))(
      q, k, v, start, end)


_reference = jax.jit(fa.reference_flash_attention, static_argnames=("scale",))
_reference_grads = jax.jit(
    jax.grad(functools.partial(_loss, fa.reference_flash_attention), argnums=(0, 1, 2)))


@pytest.fixture(autouse=True, scope="module")
def _unoptimized_compiles():
  """Halves XLA compile time of the interpreted kernels; numerics are unchanged."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def _check(q, k, v, start, end, tol, grads=True, platform=None):
  out = _forward(q, k, v, start, end, platform=platform)
  _assert_close(out, _reference(q, k, v, start, end), tol)
  if grads:
    for got, want in zip(_grads(q, k, v, start, end, platform=platform),
                         _reference_grads(q, k, v, start, end)):
      _assert_close(got, want, tol)
  return out


# Most tests share one shape (and so one compilation): lengths 129 = 4 tiles of 32 + 1 row.
SHAPE = dict(batch=2, q_len=129, kv_len=129, heads=4, kv_heads=2, head_dim=32)


def _shared_qkv(seed):
  return _qkv(jax.random.key(seed), **SHAPE)


@pytest.mark.parametrize("kind", ["causal", "packed", "prefix", "bidirectional"])
def test_matches_reference_with_gqa(kind):
  rng = np.random.default_rng(len(kind))
  _check(*_shared_qkv(1), *_ranges(kind, rng, 2, 129), F32_TOL)


def test_single_token_documents_and_empty_rows_give_zero_output_and_grads():
  rng = np.random.default_rng(3)
  start, end = _ranges("packed", rng, 2, 129, max_doc=2, pad=40)
  q, k, v = _shared_qkv(2)
  out = _check(q, k, v, start, end, F32_TOL)
  empty = np.asarray(start >= end)
  assert empty.sum() == 2 * 40
  assert np.all(np.asarray(out)[empty] == 0)
  dq = _grads(q, k, v, start, end)[0]
  assert np.all(np.asarray(dq)[empty] == 0)


def test_arbitrary_ranges_including_inverted_and_out_of_bounds():
  """Any per-row ranges, not only the monotone ones masks.py builds; out-of-range keys clip."""
  rng = np.random.default_rng(4)
  start = rng.integers(-5, 140, size=(2, 129)).astype(np.int32)
  end = (start + rng.integers(-10, 60, size=(2, 129))).astype(np.int32)
  _check(*_shared_qkv(3), jnp.asarray(start), jnp.asarray(end), F32_TOL)


@pytest.mark.parametrize("q_len,kv_len,grads", [(1, 1, False), (1, 129, True), (5, 127, True)])
def test_short_queries_against_long_caches(q_len, kv_len, grads):
  """Decoding-like shapes: the last `q_len` positions of a causal sequence of `kv_len` keys."""
  pos = jnp.arange(kv_len - q_len, kv_len, dtype=jnp.int32)[None, :]
  start, end = jnp.zeros((1, q_len), jnp.int32), pos + 1
  q, k, v = _qkv(jax.random.key(4), 1, q_len, kv_len, heads=2, kv_heads=1, head_dim=16)
  _check(q, k, v, start, end, F32_TOL, grads=grads)


def test_bfloat16():
  rng = np.random.default_rng(5)
  start, end = _ranges("prefix", rng, 2, 127)
  q, k, v = _qkv(jax.random.key(5), 2, 127, 127, heads=4, kv_heads=1, head_dim=64,
                 dtype=jnp.bfloat16)
  out = _check(q, k, v, start, end, BF16_TOL)
  assert out.dtype == jnp.bfloat16


def test_matches_jax_nn_dot_product_attention():
  """A peer implementation: jax.nn's XLA attention with the equivalent boolean mask."""
  rng = np.random.default_rng(6)
  segment_ids = _segments(rng, 2, 129, max_doc=50, pad=0)  # jax.nn cannot express empty rows.
  start, end = masks.causal_ranges(segment_ids)
  q, k, v = _shared_qkv(6)
  pos_11S = jnp.arange(129)[None, None, :]
  mask_B1TS = ((pos_11S >= start[..., None]) & (pos_11S < end[..., None]))[:, None]
  peer = lambda q, k, v, *_: jax.nn.dot_product_attention(q, k, v, mask=mask_B1TS)
  _assert_close(_forward(q, k, v, start, end), peer(q, k, v), F32_TOL)
  peer_grads = jax.grad(functools.partial(_loss, peer), argnums=(0, 1, 2))(q, k, v, start, end)
  for got, want in zip(_grads(q, k, v, start, end), peer_grads):
    _assert_close(got, want, F32_TOL)


def test_custom_scale_and_odd_head_dim():
  start, end = _ranges("causal", None, 1, 40)
  q, k, v = _qkv(jax.random.key(7), 1, 40, 40, heads=3, kv_heads=3, head_dim=24)
  out = _forward(q, k, v, start, end, scale=0.3)
  _assert_close(out, _reference(q, k, v, start, end, scale=0.3), F32_TOL)


def test_tpu_launch_in_interpret_mode():
  """The TPU launch (SMEM tables, head_dim padded to 128 lanes), run by the interpreter."""
  rng = np.random.default_rng(8)
  _check(*_shared_qkv(8), *_ranges("packed", rng, 2, 129), F32_TOL, platform="tpu")


def test_fully_masked_blocks_are_never_read():
  """NaN keys/values in blocks no row may see: a kernel that touched them would output NaN."""
  rng = np.random.default_rng(9)
  segment_ids = _segments(rng, 2, 129, max_doc=30, pad=65)  # Keys 64.. are padding only.
  start, end = masks.causal_ranges(segment_ids)
  q, k, v = _shared_qkv(9)
  poison = lambda x: x.at[:, 64:].set(jnp.nan)
  out = _forward(q, poison(k), poison(v), start, end)
  want = _reference(q, k, v, start, end)
  _assert_close(out[:, :64], want[:, :64], F32_TOL)
  assert np.all(np.asarray(out[:, 64:]) == 0)
  for grad in _grads(q, poison(k), poison(v), start, end):
    assert np.all(np.isfinite(np.asarray(grad)[:, :64]))


def test_block_table_causal():
  start, end = masks.causal_ranges(jnp.ones((1, 128), jnp.int32))
  table = np.asarray(fa.block_table(start, end, block_q=32, block_k=32))[0]
  i = np.arange(4)
  np.testing.assert_array_equal(table, np.stack([0 * i, i + 1, 0 * i, i], axis=-1))
  assert int(fa.num_visited_blocks(start, end, 32, 32)) == 4 * 5 // 2


def test_packed_documents_visit_fewer_blocks_than_causal():
  """Documents of 64 tokens in a 1024 sequence: about their share of the causal blocks."""
  segment_ids = jnp.repeat(jnp.arange(1, 17, dtype=jnp.int32), 64)[None, :]
  causal = fa.num_visited_blocks(*masks.causal_ranges(jnp.ones_like(segment_ids)), 64, 64)
  packed = fa.num_visited_blocks(*masks.causal_ranges(segment_ids), 64, 64)
  assert int(causal) == 16 * 17 // 2 and int(packed) == 16


def test_bad_shapes_are_rejected():
  q, k, v = _qkv(jax.random.key(0), 1, 8, 8, heads=3, kv_heads=2, head_dim=8)
  start, end = _ranges("causal", None, 1, 8)
  with pytest.raises(ValueError, match="kv_heads=2 must divide q_heads=3"):
    fa.flash_attention(q, k, v, start, end)
  with pytest.raises(ValueError, match=r"must be \[batch, q_len\]"):
    fa.flash_attention(q, k[:, :, :1], v[:, :, :1], start[:, :4], end)
  with pytest.raises(ValueError, match="power of two"):
    fa.BlockSizes(block_q=48)
  with pytest.raises(ValueError, match="platform='metal' is not one of"):
    fa.flash_attention(q, k[:, :, :1], v[:, :, :1], start, end, platform="metal")


@pytest.mark.parametrize("platform,target", [("gpu", "cuda"), ("tpu", "tpu")])
def test_lowers_for_accelerators(platform, target):
  """Forward and backward lower to Triton (GPU) and Mosaic (TPU) IR without the hardware."""
  q = jax.ShapeDtypeStruct((2, 256, 4, 128), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((2, 256, 2, 128), jnp.bfloat16)
  r = jax.ShapeDtypeStruct((2, 256), jnp.int32)
  kernel = functools.partial(fa.flash_attention, interpret=False, platform=platform)
  grad = jax.jit(jax.grad(functools.partial(_loss, kernel), argnums=(0, 1, 2)))
  exported = export.export(grad, platforms=[target], disabled_checks=[
      export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(q, k, k, r, r)
  text = exported.mlir_module()
  assert ("triton" in text) if target == "cuda" else ("tpu_custom_call" in text)


@pytest.mark.parametrize(
    "seed", [0] + [pytest.param(s, marks=pytest.mark.slow) for s in range(1, 8)])
def test_random_shapes(seed):
  """Random batch, length (1..259), heads, GQA group, head_dim and mask kind."""
  rng = np.random.default_rng(100 + seed)
  batch, length = int(rng.integers(1, 3)), int(rng.integers(1, 260))
  kv_heads = int(rng.choice([1, 2]))
  heads, head_dim = kv_heads * int(rng.choice([1, 2, 4])), int(rng.choice([16, 32, 64]))
  kind = str(rng.choice(["causal", "packed", "prefix", "bidirectional"]))
  start, end = _ranges(kind, rng, batch, length, max_doc=int(rng.integers(1, 80)),
                       pad=int(rng.integers(0, length // 2 + 1)))
  q, k, v = _qkv(jax.random.key(seed), batch, length, length, heads, kv_heads, head_dim)
  _check(q, k, v, start, end, F32_TOL)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compiles for TPU slices (libtpu's compile-only devices; no TPU needed). Mosaic
# checks the kernel's VMEM use at compile time, so a kernel that holds O(T) in VMEM fails here.


def _tpu_mesh(topology):
  topologies = pytest.importorskip("jax.experimental.topologies")
  pytest.importorskip("libtpu", reason="the [tpu] extra gives the compile-only devices")
  devices = topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
  return jax.sharding.Mesh(np.asarray(devices), ("batch",))


def _compile_for_tpu(topology, seq_len, heads, kv_heads, head_dim):
  """Forward + backward of the TPU kernel inside shard_map (one sequence per chip)."""
  mesh = _tpu_mesh(topology)
  batch = mesh.size
  spec = jax.sharding.PartitionSpec("batch")
  sharding = jax.sharding.NamedSharding(mesh, spec)
  q = jax.ShapeDtypeStruct((batch, seq_len, heads, head_dim), jnp.bfloat16, sharding=sharding)
  kv = jax.ShapeDtypeStruct((batch, seq_len, kv_heads, head_dim), jnp.bfloat16,
                            sharding=sharding)
  r = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=sharding)
  kernel = functools.partial(fa.flash_attention, interpret=False, platform="tpu")
  grads = jax.grad(functools.partial(_loss, kernel), argnums=(0, 1, 2))
  step = jax.shard_map(grads, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
  compiled = jax.jit(step).lower(q, kv, kv, r, r).compile()
  return compiled.memory_analysis()


@pytest.mark.parametrize("seq_len,heads,kv_heads,head_dim", [
    (32768, 8, 8, 128),
    pytest.param(2048, 8, 2, 64, marks=pytest.mark.slow),
    pytest.param(8192, 32, 8, 128, marks=pytest.mark.slow),
    pytest.param(131072, 8, 8, 128, marks=pytest.mark.slow),
    pytest.param(131072, 16, 4, 64, marks=pytest.mark.slow),
])
def test_tpu_kernel_compiles_forward_and_backward_on_v5e(seq_len, heads, kv_heads, head_dim):
  """T = 32k, 8 heads, head_dim 128, bf16 on v5e:2x2: the case that overflowed VMEM when the
  kernel held whole K/V rows. Ranges are data (causal, packed, prefix-LM compile alike)."""
  stats = _compile_for_tpu("v5e:2x2", seq_len, heads, kv_heads, head_dim)
  assert stats.argument_size_in_bytes > 0


@pytest.mark.slow
@pytest.mark.parametrize("seq_len,head_dim", [(2048, 128), (32768, 64), (131072, 128)])
def test_tpu_kernel_compiles_forward_and_backward_on_v5p(seq_len, head_dim):
  stats = _compile_for_tpu("v5p:2x2x1", seq_len, 16, 4, head_dim)
  assert stats.argument_size_in_bytes > 0
