"""A decoder-only Flax transformer: RMSNorm, rotary positions, SwiGLU, grouped-query attention.

Shape suffixes (used across mixjax): B batch, T query length, S key length, D model width,
H query heads, K kv heads, Dh head dim, F mlp width, V vocabulary.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`) and key activations are constrained with (`batch`, `length`, `act_*`); the mesh rules in
`mixjax.training.partitioning` map them to mesh axes. Attention is restricted per query row to a
key range (see `masks.py`), so packed documents never attend to each other.

Decoding (`mixjax.inference`) runs the same modules with a `Decode` argument: `prefill` is the
training forward over right-padded prompts that also writes each layer's keys and values into the
`cache` collection; `step` runs one token per row against that cache through the decode-attention
dispatch (`attention.decode_attention`). Both return the logits of each row's next token.
"""

import dataclasses
from typing import Any

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
  rope_max_wavelength: float = 10_000.0   # Hugging Face's `rope_theta`
  # Rotary frequency scaling: 'default' (none) | 'llama3' (Llama 3.1's piecewise scaling of the
  # low frequencies, with the four `rope_*` fields below as in HF's `rope_scaling`).
  rope_type: str = "default"
  rope_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_positions: int = 8192
  qkv_bias: bool = False          # biases on the query/key/value projections (Qwen2)
  tie_embeddings: bool = False    # logits = x @ embedding^T (no separate `unembed` kernel)
  norm_eps: float = 1e-6          # RMSNorm's epsilon (HF's `rms_norm_eps`)
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
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"Unknown rope_type {self.rope_type!r}; valid: {ROPE_TYPES}.")
    if self.rope_type == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
      raise ValueError(f"rope_type='llama3' needs rope_high_freq_factor "
                       f"({self.rope_high_freq_factor}) > rope_low_freq_factor "
                       f"({self.rope_low_freq_factor}).")
    if self.attention_impl not in attention_lib.ATTENTION_IMPLS:
      raise ValueError(f"Unknown attention_impl {self.attention_impl!r}; valid: "
                       f"{sorted(attention_lib.ATTENTION_IMPLS)}.")


ARCHITECTURES = ("decoder", "encoder_decoder")
ROPE_TYPES = ("default", "llama3")
DECODE_MODES = ("prefill", "step")


@dataclasses.dataclass(frozen=True)
class Decode:
  """How one forward pass uses the KV cache (the `cache` collection, `[B, cache_len, K, Dh]` per
  layer and kind).

  `prefill`: tokens `[B, P]` are right-padded prompts, run as in training (key ranges keep pads
  out); keys and values go to cache slots `[0, P)`; `lengths_B` (live tokens per row) picks the
  row's last prompt position for the returned logits. `step`: tokens `[B, 1]`, written at slot
  `lengths_B` (and rotated at that position), attending to slots `[0, lengths_B]`.
  `cross_lengths_B` (set by `EncoderDecoder`) bounds cross-attention to the live encoder keys.
  `impl` picks decode attention (`attention.DECODE_IMPLS`); on a `mesh` of several devices it
  runs inside `shard_map` there.
  """
  mode: str
  lengths_B: Any
  cache_len: int = 0
  impl: str = "auto"
  cross_lengths_B: Any = None
  mesh: Any = None

  def __post_init__(self):
    if self.mode not in DECODE_MODES:
      raise ValueError(f"Decode.mode={self.mode!r}; valid: {DECODE_MODES}.")


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
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x_BTD):
    scale_D = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         (x_BTD.shape[-1],))
    x32 = x_BTD.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * scale_D[None, None, :]).astype(self.dtype)


def rope_frequencies(cfg: TransformerConfig):
  """Rotary inverse frequencies `[Dh / 2]` (float32): `rope_max_wavelength ** (-i / half)`,
  then, for `rope_type='llama3'`, wavelengths past `original / low_freq_factor` divided by
  `factor`, those under `original / high_freq_factor` kept, and a linear blend between."""
  half = cfg.head_dim // 2
  freq_F = cfg.rope_max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  if cfg.rope_type == "default":
    return freq_F
  wavelength_F = 2 * jnp.pi / freq_F
  original = cfg.rope_original_max_positions
  low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  scaled_F = jnp.where(wavelength_F > original / low, freq_F / cfg.rope_factor, freq_F)
  smooth_F = (original / wavelength_F - low) / (high - low)
  blended_F = (1 - smooth_F) * scaled_F / cfg.rope_factor + smooth_F * scaled_F
  medium_F = (wavelength_F >= original / high) & (wavelength_F <= original / low)
  return jnp.where(medium_F, blended_F, scaled_F)


def apply_rotary(x_BTHD, positions_BT, freq_F):
  """Rotary position embedding (half-split layout, as HF's `rotate_half`) at the given
  per-token positions, with inverse frequencies `freq_F` (`rope_frequencies`)."""
  half = x_BTHD.shape[-1] // 2
  angle_BTF = positions_BT[..., None].astype(jnp.float32) * freq_F[None, None, :]
  sin_BT1F, cos_BT1F = jnp.sin(angle_BTF)[:, :, None], jnp.cos(angle_BTF)[:, :, None]
  x1, x2 = x_BTHD[..., :half].astype(jnp.float32), x_BTHD[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos_BT1F - x2 * sin_BT1F, x2 * cos_BT1F + x1 * sin_BT1F], axis=-1)
  return out.astype(x_BTHD.dtype)


class Attention(nn.Module):
  """Self-attention (rotary at `positions_BT`), or cross-attention (`cross`) over `kv_BSD`."""
  config: TransformerConfig
  cross: bool = False

  @nn.compact
  def __call__(self, x_BTD, positions_BT, k_start_BT, k_end_BT, kv_BSD=None,
               decode: Decode | None = None):
    cfg = self.config
    dense = lambda name, heads, axis: nn.DenseGeneral(  # noqa: E731
        (heads, cfg.head_dim), use_bias=cfg.qkv_bias, dtype=cfg.dtype, name=name,
        kernel_init=_dense_init("embed", axis, "head_dim"),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis, "head_dim")))
    freq_F = rope_frequencies(cfg)
    q_BTHD = dense("query", cfg.num_heads, "heads")(x_BTD)
    if not self.cross:
      q_BTHD = apply_rotary(q_BTHD, positions_BT, freq_F)
    q_BTHD = _constrain(q_BTHD, "batch", "length", "act_heads", None)
    if decode is not None and decode.mode == "step":
      out_BTHD = self._cached_step(q_BTHD, x_BTD, positions_BT, decode, dense, freq_F)
    else:
      source_BSD = kv_BSD if self.cross else x_BTD
      k_BSKD = dense("key", cfg.num_kv_heads, "kv_heads")(source_BSD)
      v_BSKD = dense("value", cfg.num_kv_heads, "kv_heads")(source_BSD)
      if not self.cross:
        k_BSKD = apply_rotary(k_BSKD, positions_BT, freq_F)
      if decode is not None:  # prefill: keep the keys and values for the steps
        size = k_BSKD.shape[1] if self.cross else decode.cache_len
        for name, new_BSKD in (("cached_key", k_BSKD), ("cached_value", v_BSKD)):
          slot = self.variable("cache", name, jnp.zeros,
                               (new_BSKD.shape[0], size, *new_BSKD.shape[2:]), new_BSKD.dtype)
          slot.value = jax.lax.dynamic_update_slice_in_dim(slot.value, new_BSKD, 0, axis=1)
      out_BTHD = attention_lib.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, k_start_BT,
                                                     k_end_BT, impl=cfg.attention_impl)
    out_BTHD = _constrain(out_BTHD, "batch", "length", "act_heads", None)
    return nn.DenseGeneral(cfg.d_model, axis=(-2, -1), use_bias=False, dtype=cfg.dtype,
                           name="out", kernel_init=_dense_init("heads", "head_dim", "embed"))(out_BTHD)

  def _cached_step(self, q_B1HD, x_B1D, positions_B1, decode: Decode, dense, freq_F):
    """One token per row against the cache: self-attention writes its key and value at slot
    `lengths_B` first; cross-attention reads the encoder's keys and values cached at prefill."""
    cfg = self.config
    cache_k = self.variable("cache", "cached_key", lambda: None)
    cache_v = self.variable("cache", "cached_value", lambda: None)
    if cache_k.value is None:
      raise ValueError("Decode(mode='step') needs the cache a prefill wrote (pass its `cache` "
                       "collection, mutable).")
    if self.cross:
      lengths_B = decode.cross_lengths_B
    else:
      k_B1KD = apply_rotary(dense("key", cfg.num_kv_heads, "kv_heads")(x_B1D), positions_B1,
                            freq_F)
      v_B1KD = dense("value", cfg.num_kv_heads, "kv_heads")(x_B1D)
      rows_B = jnp.arange(x_B1D.shape[0])
      cache_k.value = cache_k.value.at[rows_B, decode.lengths_B].set(k_B1KD[:, 0])
      cache_v.value = cache_v.value.at[rows_B, decode.lengths_B].set(v_B1KD[:, 0])
      lengths_B = decode.lengths_B + 1
    out_BHD = attention_lib.decode_attention(q_B1HD[:, 0], cache_k.value, cache_v.value,
                                             lengths_B, impl=decode.impl, mesh=decode.mesh)
    return out_BHD[:, None]


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
  def __call__(self, x_BTD, positions_BT, k_start_BT, k_end_BT, encoded=None, decode=None):
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.dtype, cfg.norm_eps, name=name)  # noqa: E731
    x_BTD = x_BTD + Attention(cfg, name="attention")(
        norm("pre_attention_norm")(x_BTD), positions_BT, k_start_BT, k_end_BT, decode=decode)
    if encoded is not None:
      enc_BSD, cross_start_BT, cross_end_BT = encoded
      x_BTD = x_BTD + Attention(cfg, cross=True, name="cross_attention")(
          norm("pre_cross_attention_norm")(x_BTD), positions_BT, cross_start_BT, cross_end_BT,
          kv_BSD=enc_BSD, decode=decode)
    x_BTD = x_BTD + SwiGLU(cfg, name="mlp")(norm("pre_mlp_norm")(x_BTD))
    return _constrain(x_BTD, "batch", "length", "act_embed")


def _embedding_table(module: nn.Module, cfg: TransformerConfig):
  return module.param(
      "embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
      (cfg.vocab_size, cfg.d_model))


def _embed(embedding_VD, cfg: TransformerConfig, tokens_BT):
  return _constrain(jnp.take(embedding_VD, tokens_BT, axis=0).astype(cfg.dtype),
                    "batch", "length", "act_embed")


def _stack(cfg: TransformerConfig, prefix: str, x_BTD, positions_BT, ranges, encoded=None,
           decode=None):
  # Decoding needs no rematerialisation (no backward pass); the parameter tree is the same.
  policy = REMAT_POLICIES[remat_policy(cfg.remat)] if decode is None else None
  block = DecoderBlock if policy is None else nn.remat(DecoderBlock, policy=policy)
  for i in range(cfg.num_layers):
    x_BTD = block(cfg, name=f"{prefix}{i}")(x_BTD, positions_BT, *ranges, encoded, decode)
  return x_BTD


def _next_token_rows(x_BTD, decode):
  """Prefill: each row's last live position `[B, 1, D]` (the one that predicts the next token)."""
  if decode is None or decode.mode == "step":
    return x_BTD
  return jnp.take_along_axis(x_BTD, (decode.lengths_B - 1)[:, None, None], axis=1)


def _step_ranges(tokens_BT):
  """Key ranges for a decode step: unused (the cache lengths bound attention), shaped right."""
  zeros_BT = jnp.zeros_like(tokens_BT)
  return zeros_BT, zeros_BT


def _logits(cfg: TransformerConfig, x_BTD, embedding_VD):
  x_BTD = RMSNorm(cfg.dtype, cfg.norm_eps, name="final_norm")(x_BTD)
  if cfg.tie_embeddings:  # the embedding table doubles as the output projection
    logits_BTV = jnp.einsum("btd,vd->btv", x_BTD, embedding_VD.astype(cfg.dtype))
  else:
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
  bidirectional prefix per document (prefix-LM); or explicit `key_ranges=(k_start, k_end)`;
  `decode` (a `Decode`) for cached decoding, which returns the next token's logits `[B, 1, V]`.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BT, segment_ids_BT=None, positions_BT=None, inputs_mask_BT=None,
               key_ranges=None, decode: Decode | None = None):
    cfg = self.config
    segment_ids_BT, positions_BT = _default_layout(tokens_BT, segment_ids_BT, positions_BT)
    if decode is not None and decode.mode == "step":
      key_ranges = _step_ranges(tokens_BT)
    elif key_ranges is None:
      key_ranges = (masks.causal_ranges(segment_ids_BT) if inputs_mask_BT is None
                    else masks.prefix_lm_ranges(segment_ids_BT, inputs_mask_BT))
    embedding_VD = _embedding_table(self, cfg)
    x_BTD = _stack(cfg, "layer_", _embed(embedding_VD, cfg, tokens_BT), positions_BT,
                   key_ranges, decode=decode)
    return _logits(cfg, _next_token_rows(x_BTD, decode), embedding_VD)


class EncoderDecoder(nn.Module):
  """T5-style encoder-decoder (shared embedding). Returns float32 decoder logits `[B, T, V]`.

  The encoder attends bidirectionally within each packed segment; decoder rows attend causally
  within their segment and, across, to the encoder positions of the same segment.
  With `decode`, the encoder runs at prefill only (unpacked rows: its live keys are a prefix of
  each row), and its cross-attention keys and values are cached; steps pass
  `encoder_tokens_BS=None`.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, encoder_tokens_BS, tokens_BT, encoder_segment_ids_BS=None,
               segment_ids_BT=None, encoder_positions_BS=None, positions_BT=None,
               decode: Decode | None = None):
    cfg = self.config
    segment_ids_BT, positions_BT = _default_layout(tokens_BT, segment_ids_BT, positions_BT)
    embedding_VD = _embedding_table(self, cfg)
    if decode is not None and decode.mode == "step":
      cross_lengths_B = self.variable("cache", "encoder_lengths", lambda: None).value
      decode = dataclasses.replace(decode, cross_lengths_B=cross_lengths_B)
      encoded = (None, *_step_ranges(tokens_BT))
      self_ranges = _step_ranges(tokens_BT)
    else:
      encoder_segment_ids_BS, encoder_positions_BS = _default_layout(
          encoder_tokens_BS, encoder_segment_ids_BS, encoder_positions_BS)
      enc_BSD = _stack(cfg, "encoder_", _embed(embedding_VD, cfg, encoder_tokens_BS),
                       encoder_positions_BS,
                       masks.bidirectional_ranges(encoder_segment_ids_BS))
      enc_BSD = RMSNorm(cfg.dtype, cfg.norm_eps, name="encoder_norm")(enc_BSD)
      encoded = (enc_BSD, *masks.cross_ranges(segment_ids_BT, encoder_segment_ids_BS))
      self_ranges = masks.causal_ranges(segment_ids_BT)
      if decode is not None:
        self.variable("cache", "encoder_lengths", lambda: None).value = jnp.sum(
            encoder_segment_ids_BS > 0, axis=1, dtype=jnp.int32)
    x_BTD = _stack(cfg, "decoder_", _embed(embedding_VD, cfg, tokens_BT), positions_BT,
                   self_ranges, encoded, decode=decode)
    return _logits(cfg, _next_token_rows(x_BTD, decode), embedding_VD)


MODELS = {"decoder": Decoder, "encoder_decoder": EncoderDecoder}


def build_model(config: TransformerConfig) -> nn.Module:
  if config.vocab_size is None:
    raise ValueError("TransformerConfig.vocab_size is None: train() sets it from the run's "
                     "vocabulary (mixjax.vocab.embedding_size); set it when building a model "
                     "by hand.")
  return MODELS[config.architecture](config)
