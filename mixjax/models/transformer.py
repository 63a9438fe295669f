"""A decoder-only Flax transformer: RMSNorm, rotary positions, SwiGLU, grouped-query attention.

Shape suffixes (used across mixjax): B batch, T query length, S key length, D model width,
H query heads, K kv heads, Dh head dim, F mlp width, V vocabulary.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`) and key activations are constrained with (`batch`, `length`, `act_*`); the mesh rules in
`mixjax.training.partitioning` map them to mesh axes. Attention is restricted per query row to a
key range (see `masks.py`), so packed documents never attend to each other.
"""

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from mixjax.models import attention as attention_lib
from mixjax.models import masks


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Model hyperparameters. `dtype` is the activation dtype; parameters are float32."""
  # Embedding rows; None: train() sets it from the run's vocabulary (padded to a multiple of 128).
  vocab_size: int | None = None
  d_model: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 384
  rope_max_wavelength: float = 10_000.0
  dtype: str = "float32"
  attention_impl: str = "xla"
  # Rematerialisation of each block in the backward pass: 'none' | 'dots_saveable' (keep the
  # weight matmuls' outputs, recompute the rest) | 'full' (keep only the block inputs);
  # True / False mean 'full' / 'none'.
  remat: bool | str = False
  architecture: str = "decoder"   # decoder | encoder_decoder (num_layers each side)

  def __post_init__(self):
    if self.vocab_size is not None and self.vocab_size < 1:
      raise ValueError(f"vocab_size={self.vocab_size} must be positive (or None).")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}.")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings.")
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"Unknown architecture {self.architecture!r}; valid: {ARCHITECTURES}.")
    if remat_policy(self.remat) not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat {self.remat!r}; valid: {sorted(REMAT_POLICIES)}.")
    if self.attention_impl not in attention_lib.ATTENTION_IMPLS:
      raise ValueError(f"Unknown attention_impl {self.attention_impl!r}; valid: "
                       f"{sorted(attention_lib.ATTENTION_IMPLS)}.")


ARCHITECTURES = ("decoder", "encoder_decoder")
# remat name -> jax checkpoint policy (None: no remat; the empty policy saves nothing).
REMAT_POLICIES = {
    "none": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def remat_policy(remat: bool | str) -> str:
  """The policy name of a `TransformerConfig.remat` value (booleans from older configs)."""
  if isinstance(remat, bool):
    return "full" if remat else "none"
  return remat


def _dense_init(*names):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


def _constrain(x, *names):
  # The mesh is passed explicitly: under the legacy `with mesh:` flax sees no global mesh and
  # would drop the constraint (XLA then may replicate activations across the fsdp axis).
  return nn.with_logical_constraint(x, names, mesh=attention_lib.current_kernel_mesh())


class RMSNorm(nn.Module):
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x_BTD):
    scale_D = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         (x_BTD.shape[-1],))
    x32 = x_BTD.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)
    return (x32 * scale_D[None, None, :]).astype(self.dtype)


def apply_rotary(x_BTHD, positions_BT, max_wavelength):
  """Rotary position embedding (half-split layout) at the given per-token positions."""
  half = x_BTHD.shape[-1] // 2
  freq_F = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BTF = positions_BT[..., None].astype(jnp.float32) * freq_F[None, None, :]
  sin_BT1F, cos_BT1F = jnp.sin(angle_BTF)[:, :, None], jnp.cos(angle_BTF)[:, :, None]
  x1, x2 = x_BTHD[..., :half].astype(jnp.float32), x_BTHD[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos_BT1F - x2 * sin_BT1F, x2 * cos_BT1F + x1 * sin_BT1F], axis=-1)
  return out.astype(x_BTHD.dtype)


class Attention(nn.Module):
  """Self-attention (rotary at `positions_BT`), or cross-attention when `kv_BSD` is given."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, k_start_BT, k_end_BT, kv_BSD=None):
    cfg = self.config
    dense = lambda name, heads, axis: nn.DenseGeneral(  # noqa: E731
        (heads, cfg.head_dim), use_bias=False, dtype=cfg.dtype, name=name,
        kernel_init=_dense_init("embed", axis, "head_dim"))
    source_BSD = x_BTD if kv_BSD is None else kv_BSD
    q_BTHD = dense("query", cfg.num_heads, "heads")(x_BTD)
    k_BSKD = dense("key", cfg.num_kv_heads, "kv_heads")(source_BSD)
    v_BSKD = dense("value", cfg.num_kv_heads, "kv_heads")(source_BSD)
    if kv_BSD is None:
      q_BTHD = apply_rotary(q_BTHD, positions_BT, cfg.rope_max_wavelength)
      k_BSKD = apply_rotary(k_BSKD, positions_BT, cfg.rope_max_wavelength)
    q_BTHD = _constrain(q_BTHD, "batch", "length", "act_heads", None)
    out_BTHD = attention_lib.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT, k_end_BT,
                                                   impl=cfg.attention_impl)
    out_BTHD = _constrain(out_BTHD, "batch", "length", "act_heads", None)
    return nn.DenseGeneral(cfg.d_model, axis=(-2, -1), use_bias=False, dtype=cfg.dtype,
                           name="out", kernel_init=_dense_init("heads", "head_dim", "embed"))(out_BTHD)


class SwiGLU(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.config
    dense = lambda name, feats, names: nn.Dense(  # noqa: E731
        feats, use_bias=False, dtype=cfg.dtype, name=name, kernel_init=_dense_init(*names))
    gate_BTF = dense("wi_gate", cfg.mlp_dim, ("embed", "mlp"))(x_BTD)
    up_BTF = dense("wi_up", cfg.mlp_dim, ("embed", "mlp"))(x_BTD)
    h_BTF = _constrain(nn.silu(gate_BTF) * up_BTF, "batch", "length", "act_mlp")
    return dense("wo", cfg.d_model, ("mlp", "embed"))(h_BTF)


class DecoderBlock(nn.Module):
  """Pre-norm block: self-attention, optional cross-attention (`encoded`), SwiGLU."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, k_start_BT, k_end_BT, encoded=None):
    cfg = self.config
    x_BTD = x_BTD + Attention(cfg, name="attention")(
        RMSNorm(cfg.dtype, name="pre_attention_norm")(x_BTD), positions_BT, k_start_BT, k_end_BT)
    if encoded is not None:
      enc_BSD, cross_start_BT, cross_end_BT = encoded
      x_BTD = x_BTD + Attention(cfg, name="cross_attention")(
          RMSNorm(cfg.dtype, name="pre_cross_attention_norm")(x_BTD), positions_BT,
          cross_start_BT, cross_end_BT, kv_BSD=enc_BSD)
    x_BTD = x_BTD + SwiGLU(cfg, name="mlp")(RMSNorm(cfg.dtype, name="pre_mlp_norm")(x_BTD))
    return _constrain(x_BTD, "batch", "length", "act_embed")


def _embedding_table(module: nn.Module, cfg: TransformerConfig):
  return module.param(
      "embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
      (cfg.vocab_size, cfg.d_model))


def _embed(embedding_VD, cfg: TransformerConfig, tokens_BT):
  return _constrain(jnp.take(embedding_VD, tokens_BT, axis=0).astype(cfg.dtype),
                    "batch", "length", "act_embed")


def _stack(cfg: TransformerConfig, prefix: str, x_BTD, positions_BT, ranges, encoded=None):
  policy = REMAT_POLICIES[remat_policy(cfg.remat)]
  block = DecoderBlock if policy is None else nn.remat(DecoderBlock, policy=policy)
  for i in range(cfg.num_layers):
    x_BTD = block(cfg, name=f"{prefix}{i}")(x_BTD, positions_BT, *ranges, encoded)
  return x_BTD


def _logits(cfg: TransformerConfig, x_BTD):
  x_BTD = RMSNorm(cfg.dtype, name="final_norm")(x_BTD)
  logits_BTV = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, name="unembed",
                        kernel_init=_dense_init("embed", "vocab"))(x_BTD)
  return _constrain(logits_BTV.astype(jnp.float32), "batch", "length", "act_vocab")


def _default_layout(tokens_BT, segment_ids_BT, positions_BT):
  if segment_ids_BT is None:
    segment_ids_BT = jnp.ones_like(tokens_BT)
  if positions_BT is None:
    positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
  return segment_ids_BT, positions_BT


class Decoder(nn.Module):
  """Decoder-only LM. Returns float32 logits `[B, T, V]`.

  Args to `__call__`: `tokens_BT` int32 inputs; `segment_ids_BT` (0 = padding, packed documents
  get distinct ids); `positions_BT` per-document positions; `inputs_mask_BT` (optional) marks a
  bidirectional prefix per document (prefix-LM); or explicit `key_ranges=(k_start, k_end)`.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BT, segment_ids_BT=None, positions_BT=None, inputs_mask_BT=None,
               key_ranges=None):
    cfg = self.config
    segment_ids_BT, positions_BT = _default_layout(tokens_BT, segment_ids_BT, positions_BT)
    if key_ranges is None:
      key_ranges = (masks.causal_ranges(segment_ids_BT) if inputs_mask_BT is None
                    else masks.prefix_lm_ranges(segment_ids_BT, inputs_mask_BT))
    x_BTD = _stack(cfg, "layer_", _embed(_embedding_table(self, cfg), cfg, tokens_BT),
                   positions_BT, key_ranges)
    return _logits(cfg, x_BTD)


class EncoderDecoder(nn.Module):
  """T5-style encoder-decoder (shared embedding). Returns float32 decoder logits `[B, T, V]`.

  The encoder attends bidirectionally within each packed segment; decoder rows attend causally
  within their segment and, across, to the encoder positions of the same segment.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, encoder_tokens_BS, tokens_BT, encoder_segment_ids_BS=None,
               segment_ids_BT=None, encoder_positions_BS=None, positions_BT=None):
    cfg = self.config
    encoder_segment_ids_BS, encoder_positions_BS = _default_layout(
        encoder_tokens_BS, encoder_segment_ids_BS, encoder_positions_BS)
    segment_ids_BT, positions_BT = _default_layout(tokens_BT, segment_ids_BT, positions_BT)
    embedding_VD = _embedding_table(self, cfg)
    enc_BSD = _stack(cfg, "encoder_", _embed(embedding_VD, cfg, encoder_tokens_BS),
                     encoder_positions_BS,
                     masks.bidirectional_ranges(encoder_segment_ids_BS))
    enc_BSD = RMSNorm(cfg.dtype, name="encoder_norm")(enc_BSD)
    encoded = (enc_BSD, *masks.cross_ranges(segment_ids_BT, encoder_segment_ids_BS))
    x_BTD = _stack(cfg, "decoder_", _embed(embedding_VD, cfg, tokens_BT), positions_BT,
                   masks.causal_ranges(segment_ids_BT), encoded)
    return _logits(cfg, x_BTD)


MODELS = {"decoder": Decoder, "encoder_decoder": EncoderDecoder}


def build_model(config: TransformerConfig) -> nn.Module:
  if config.vocab_size is None:
    raise ValueError("TransformerConfig.vocab_size is None: train() sets it from the run's "
                     "vocabulary (mixjax.vocab.embedding_size); set it when building a model "
                     "by hand.")
  return MODELS[config.architecture](config)
