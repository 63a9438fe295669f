"""The attention dispatch point: every implementation gives the reference's numbers in the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.models import attention
from mixjax.models import masks
from mixjax.models import transformer


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
