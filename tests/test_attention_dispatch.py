"""The attention dispatch point: every implementation gives the reference's numbers in the model."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import pytest

from mixjax.kernels import flash_attention as fa_lib
from mixjax.models import attention
from mixjax.models import masks
from mixjax.models import transformer
from mixjax.training import partitioning


def _batch():
  tokens_BT = jax.random.randint(jax.random.key(1), (2, 40), 3, 259)
  segment_ids_BT = jnp.asarray([[1] * 15 + [2] * 20 + [0] * 5, [1] * 40])
  pos = np.concatenate([np.arange(15), np.arange(20), np.zeros(5)]).astype(np.int32)
  positions_BT = jnp.stack([jnp.asarray(pos), jnp.arange(40, dtype=jnp.int32)])
  inputs_mask_BT = jnp.asarray([[1] * 6 + [0] * 9 + [1] * 4 + [0] * 21, [1] * 10 + [0] * 30])
  return tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT


@pytest.mark.parametrize("impl", ["pallas", "cudnn"])
def test_model_logits_match_the_xla_reference(impl):
  tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT = _batch()
  config = dict(vocab_size=640, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64)
  reference = transformer.Decoder(transformer.TransformerConfig(**config, attention_impl="xla"))
  other = transformer.Decoder(transformer.TransformerConfig(**config, attention_impl=impl))
  params = reference.init(jax.random.key(0), tokens_BT)
  args = (tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT)
  np.testing.assert_allclose(other.apply(params, *args), reference.apply(params, *args),
                             rtol=1e-4, atol=1e-4)


def test_packed_documents_do_not_see_each_other():
  tokens_BT, segment_ids_BT, positions_BT, _ = _batch()
  model = transformer.Decoder(transformer.TransformerConfig(
      vocab_size=640, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64))
  params = model.init(jax.random.key(0), tokens_BT)
  logits = model.apply(params, tokens_BT, segment_ids_BT, positions_BT)
  changed = tokens_BT.at[0, :15].set(7)  # rewrite the first document only
  logits_changed = model.apply(params, changed, segment_ids_BT, positions_BT)
  np.testing.assert_allclose(logits_changed[0, 15:35], logits[0, 15:35], rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits_changed[0, :15], logits[0, :15])


def test_unknown_impl_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown attention_impl 'flash'"):
    transformer.TransformerConfig(attention_impl="flash")
  q = jnp.zeros((1, 4, 2, 8))
  with pytest.raises(ValueError, match="valid: \\['cudnn', 'pallas', 'xla'\\]"):
    attention.dot_product_attention(q, q, q, *masks.causal_ranges(jnp.ones((1, 4), jnp.int32)),
                                    impl="flash")


# ----------------------------------------------------------------------------------------------
# Kernels inside the mesh: shard_map over batch and heads (8 fake CPU devices, conftest).

MESH_RULES = (("batch", ("data", "fsdp")), ("act_heads", "tensor"))


def _mesh(shape=(2, 2, 2)):
  return Mesh(np.asarray(jax.devices()[:int(np.prod(shape))]).reshape(shape),
              ("data", "fsdp", "tensor"))


def _random_qkv_ranges(batch=4, length=24, heads=4, kv_heads=2, head_dim=8):
  kq, kk, kv = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(kq, (batch, length, heads, head_dim))
  k = jax.random.normal(kk, (batch, length, kv_heads, head_dim))
  v = jax.random.normal(kv, (batch, length, kv_heads, head_dim))
  segment_ids = jnp.asarray(np.repeat([[1] * 10 + [2] * 14], batch, axis=0))
  return q, k, v, *masks.causal_ranges(segment_ids)


def test_shard_map_splits_batch_and_heads_and_keeps_gqa_groups_together():
  """The reference run per shard gives the unsharded numbers only if each shard's q heads meet
  their own kv heads; the shapes the kernel sees show nothing was gathered."""
  q, k, v, start, end = _random_qkv_ranges()
  seen = []

  def kernel(q_, k_, v_, s_, e_):
    seen.append((q_.shape, k_.shape, s_.shape))
    return fa_lib.reference_flash_attention(q_, k_, v_, s_, e_)

  mesh = _mesh()
  with mesh, nn.logical_axis_rules(MESH_RULES), attention.kernel_mesh(mesh):
    out = jax.jit(lambda *a: attention.shard_over_batch_and_heads(
        kernel, a, head_dims=(2, 2, 2, None, None)))(q, k, v, start, end)
  assert seen == [((1, 24, 2, 8), (1, 24, 1, 8), (1, 24))]  # batch / 4, heads / 2
  np.testing.assert_allclose(out, fa_lib.reference_flash_attention(q, k, v, start, end),
                             rtol=1e-5, atol=1e-5)


def test_heads_that_do_not_split_are_replicated_not_regrouped():
  """One kv head cannot split over tensor=2: heads stay whole per shard, numbers unchanged."""
  q, k, v, start, end = _random_qkv_ranges(kv_heads=1)
  seen = []

  def kernel(q_, k_, v_, s_, e_):
    seen.append(q_.shape)
    return fa_lib.reference_flash_attention(q_, k_, v_, s_, e_)

  mesh = _mesh()
  with mesh, nn.logical_axis_rules(MESH_RULES), attention.kernel_mesh(mesh):
    out = jax.jit(lambda *a: attention.shard_over_batch_and_heads(
        kernel, a, head_dims=(2, 2, 2, None, None)))(q, k, v, start, end)
  assert seen == [(1, 24, 4, 8)]
  np.testing.assert_allclose(out, fa_lib.reference_flash_attention(q, k, v, start, end),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grads", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_pallas_model_on_a_mesh_matches_the_xla_reference(grads):
  """The whole decoder on a (data, fsdp, tensor) = (2, 2, 2) mesh, the interpreted Pallas
  kernel in shard_map against the XLA path: the loss, and (slow) the gradients."""
  tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT = _batch()
  tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT = (
      jnp.concatenate([x, x]) for x in (tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT))
  config = dict(vocab_size=640, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2,
                head_dim=8, mlp_dim=64)
  reference = transformer.Decoder(transformer.TransformerConfig(**config, attention_impl="xla"))
  pallas = transformer.Decoder(transformer.TransformerConfig(**config, attention_impl="pallas"))
  params = reference.init(jax.random.key(0), tokens_BT)
  args = (tokens_BT, segment_ids_BT, positions_BT, inputs_mask_BT)
  mesh = _mesh()

  def loss(model, params):
    return jnp.sum(jnp.sin(model.apply(params, *args)))

  with partitioning.mesh_context(mesh, partitioning.DEFAULT_RULES):
    if not grads:
      got = jax.jit(functools.partial(loss, pallas))(params)
      np.testing.assert_allclose(got, loss(reference, params), rtol=1e-4)
      return
    got = jax.jit(jax.value_and_grad(functools.partial(loss, pallas)))(params)
  want = jax.value_and_grad(functools.partial(loss, reference))(params)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
  for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
    np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-4)
