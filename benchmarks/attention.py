"""Attention on a GPU: mixjax's Pallas kernels beside cuDNN, XLA and the Pallas kernels JAX ships.

Training attention (forward, and forward+backward) at sequence 2k-8k, head_dim 128, batch x length
= 16k tokens, with a causal mask and a packed-documents mask; then one decode step against a KV
cache, as a fraction of HBM bandwidth. Every figure of a run comes from the same process and device.

  python benchmarks/attention.py --json /tmp/attention.json            # on an H100 / H200
  python benchmarks/attention.py --smoke --json /tmp/attention.json    # CPU: tiny, interpret mode

FLOPs as in the FlashAttention papers: forward 4·H·D per attended (query, key) pair, i.e.
`4·B·H·D·T²/2` for causal; forward+backward counts 3.5x the forward (the backward pass does 2.5x
the forward's matmul work). For packed documents the pairs are counted exactly, so their
TFLOP/s compare with causal; `packed_cost_vs_share` = (packed time / causal time) / (packed visited
blocks / causal visited blocks): at most 1 means packing costs no more than its share of blocks.

Peers (a peer that cannot run a case records `nan` and the reason is printed):
  mixjax_pallas  mixjax.kernels.flash_attention (Triton on GPU).
  mixjax_xla     reference_flash_attention: the model's 'xla' path.
  cudnn          jax.nn.dot_product_attention(implementation='cudnn'); packed documents are given
                 as a dense [B, 1, T, T] mask (cuDNN has no key-range mask in this API).
  jax_triton     jax.experimental.pallas.ops.gpu.attention.mha (causal + segment ids; no GQA, so
                 kv heads are repeated first).
  jax_mgpu       jax.experimental.pallas.ops.gpu.attention_mgpu (Mosaic GPU, Hopper; causal only).
Goals (H100, bf16): forward >= 0.85x cuDNN, backward >= 0.75x cuDNN, >= 1.5x jax_triton;
packed_cost_vs_share <= 1; decode >= 75% of HBM bandwidth.
"""

import argparse
import dataclasses
import functools
import json
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.gpu import attention as jax_triton_attention
from jax.experimental.pallas.ops.gpu import attention_mgpu as jax_mgpu_attention
from jax.experimental.pallas.ops.gpu import decode_attention as jax_triton_decode

from mixjax.kernels import common
from mixjax.kernels import decode_attention
from mixjax.kernels import flash_attention
from mixjax.models import masks

# HBM bandwidth (bytes/s) by device-kind substring; the first match wins (most specific first).
HBM_BYTES_PER_S = (
    ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12), ("GH200", 4.0e12),
    ("A100-SXM4-80GB", 2.04e12), ("A100", 1.56e12), ("L40S", 0.864e12), ("B200", 8.0e12),
)


@dataclasses.dataclass(frozen=True)
class Case:
  """Arrays and ranges for one training-attention shape."""
  seq_len: int
  mask: str  # 'causal' | 'packed'
  q: jax.Array
  k: jax.Array
  v: jax.Array
  segment_ids: jax.Array
  start: jax.Array
  end: jax.Array

  @property
  def attended_pairs(self):
    if self.mask == "causal":  # The papers' convention: half of T².
      return self.q.shape[0] * self.seq_len**2 / 2
    return float(jnp.sum(self.end - self.start))


def _segments(rng, batch, length, mean_doc):
  """Packed documents with geometric lengths (mean `mean_doc`), no padding."""
  ids = np.zeros((batch, length), np.int32)
  for b in range(batch):
    pos, seg = 0, 1
    while pos < length:
      n = int(rng.geometric(1 / mean_doc))
      ids[b, pos:pos + n] = seg
      pos, seg = pos + n, seg + 1
  return jnp.asarray(ids)


def make_case(args, seq_len, mask, dtype):
  batch = max(1, args.tokens // seq_len)
  kq, kk, kv = jax.random.split(jax.random.key(seq_len), 3)
  q = jax.random.normal(kq, (batch, seq_len, args.heads, args.head_dim), dtype)
  k = jax.random.normal(kk, (batch, seq_len, args.kv_heads, args.head_dim), dtype)
  v = jax.random.normal(kv, (batch, seq_len, args.kv_heads, args.head_dim), dtype)
  if mask == "causal":
    segment_ids = jnp.ones((batch, seq_len), jnp.int32)
  else:
    segment_ids = _segments(np.random.default_rng(seq_len), batch, seq_len, args.doc_len)
  start, end = masks.causal_ranges(segment_ids)
  return Case(seq_len, mask, q, k, v, segment_ids, start, end)


def _repeat_kv(q, x):
  return jnp.repeat(x, q.shape[2] // x.shape[2], axis=2)


# Each peer: (case, interpret) -> attention function of (q, k, v), or raises if it cannot run.
def _mixjax_pallas(case, interpret, block_sizes=None):
  return lambda q, k, v: flash_attention.flash_attention(
      q, k, v, case.start, case.end, interpret=interpret, block_sizes=block_sizes)


def _mixjax_xla(case, interpret):
  del interpret
  return lambda q, k, v: flash_attention.reference_flash_attention(q, k, v, case.start, case.end)


def _cudnn(case, interpret):
  if interpret or jax.default_backend() != "gpu":
    raise RuntimeError("cuDNN needs a CUDA GPU")
  if case.mask == "causal":
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                        implementation="cudnn")
  pos_11S = jnp.arange(case.seq_len)[None, None, :]
  mask_B1TS = ((pos_11S >= case.start[..., None]) & (pos_11S < case.end[..., None]))[:, None]
  return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask_B1TS,
                                                      implementation="cudnn")


def _jax_triton(case, interpret):
  segment_ids = None if case.mask == "causal" else case.segment_ids
  scale = case.q.shape[-1]**-0.5
  return lambda q, k, v: jax_triton_attention.mha(
      q, _repeat_kv(q, k), _repeat_kv(q, v), segment_ids, sm_scale=scale, causal=True,
      interpret=interpret)


def _jax_mgpu(case, interpret):
  if interpret or jax.default_backend() != "gpu":
    raise RuntimeError("Mosaic GPU needs a Hopper GPU")
  if case.mask != "causal":
    raise RuntimeError("no segment / range masks")
  config = jax_mgpu_attention.TuningConfig(
      block_q=64, block_kv=128, max_concurrent_steps=2, causal=True, block_q_dkv=64,
      block_kv_dkv=64, block_q_dq=64, block_kv_dq=64)
  return lambda q, k, v: jax_mgpu_attention.attention(q, k, v, config)


PEERS: dict[str, Callable] = {
    "mixjax_pallas": _mixjax_pallas, "mixjax_xla": _mixjax_xla, "cudnn": _cudnn,
    "jax_triton": _jax_triton, "jax_mgpu": _jax_mgpu,
}

# `--sweep`: tile variants of the mixjax kernel (changes to the platform's defaults), to retune
# `flash_attention.BlockSizes`.
SWEEP = {
    "fwd64x64": dict(block_q=64, block_k=64),
    "fwd128x128": dict(block_q=128, block_k=128),
    "fwd128x64_w4": dict(block_q=128, block_k=64, num_warps=4),
    "fwd128x64_s3": dict(block_q=128, block_k=64, num_stages=3),
    "bwd64x64": dict(block_q_dq=64, block_k_dq=64, block_q_dkv=64, block_k_dkv=64),
    "bwd128x64": dict(block_q_dq=128, block_k_dq=64, block_q_dkv=64, block_k_dkv=128),
    "bwd_w8": dict(num_warps_bwd=8),
    "bwd_w4_s3": dict(num_warps_bwd=4, num_stages_bwd=3),
}


def _check_errors(case, interpret, results, prefix):
  """Max |error| of the mixjax kernel's output and gradients against the XLA reference."""
  ours, ref = _mixjax_pallas(case, interpret), _mixjax_xla(case, interpret)
  out = jax.jit(ours)(case.q, case.k, case.v)
  results[f"{prefix}/max_err_out"] = float(jnp.max(jnp.abs(
      out.astype(jnp.float32) - jax.jit(ref)(case.q, case.k, case.v).astype(jnp.float32))))
  grads = jax.jit(_forward_backward(ours))(case.q, case.k, case.v)
  ref_grads = jax.jit(_forward_backward(ref))(case.q, case.k, case.v)
  for name, got, want in zip(("dq", "dk", "dv"), grads, ref_grads):
    results[f"{prefix}/max_err_{name}"] = float(jnp.max(jnp.abs(
        got.astype(jnp.float32) - want.astype(jnp.float32))))


def time_ms(fn, *args, iters, repeats=3):
  """Device time per call of `fn(*args)` in ms (jitted; compile and warm-up excluded).

  Calls are dispatched back to back and waited on once, so host dispatch overlaps device work;
  the median over `repeats` such runs is reported.
  """
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready([fn(*args) for _ in range(iters)])
    times.append((time.perf_counter() - start) / iters)
  return 1e3 * float(np.median(times))


def _forward_backward(attention):
  def run(q, k, v):
    out, vjp = jax.vjp(attention, q, k, v)
    return vjp(jnp.ones_like(out))
  return run


MODES = {"fwd": (lambda attention: attention, 1.0), "fwd_bwd": (_forward_backward, 3.5)}


def bench_training(args, results):
  dtype = jnp.dtype(args.dtype)
  print(f"{'mode':8} {'mask':7} {'T':>5} {'peer':28} {'ms':>9} {'TFLOP/s':>8}")
  for seq_len in args.seq_lens:
    for mask in args.masks:
      case = make_case(args, seq_len, mask, dtype)
      pairs = case.attended_pairs
      _check_errors(case, args.interpret, results, f"{mask}/T{seq_len}/mixjax_pallas")
      for mode in args.modes:
        wrap, flop_factor = MODES[mode]
        flops = flop_factor * 4 * args.heads * args.head_dim * pairs
        for peer in args.peers:
          prefix = f"{mode}/{mask}/T{seq_len}/{peer}"
          try:
            attention = PEERS[peer](case, args.interpret)
            ms = time_ms(wrap(attention), case.q, case.k, case.v, iters=args.iters)
          except Exception as e:  # pylint: disable=broad-except
            print(f"  {prefix}: unavailable ({type(e).__name__}: {str(e)[:120]})")
            ms = math.nan
          results[f"{prefix}/ms"] = ms
          results[f"{prefix}/tflops"] = flops / (ms * 1e-3) / 1e12
          print(f"{mode:8} {mask:7} {seq_len:5} {peer:28} {ms:9.3f} "
                f"{results[f'{prefix}/tflops']:8.1f}")
      if mask == "packed":
        visited = lambda c: float(flash_attention.num_visited_blocks(
            c.start, c.end, flash_attention.BlockSizes().block_q,
            flash_attention.BlockSizes().block_k))
        causal = make_case(args, seq_len, "causal", dtype)
        results[f"packed/T{seq_len}/block_share"] = visited(case) / visited(causal)
  _ratios(args, results)


def _ratios(args, results):
  """Goal ratios from the figures just measured."""
  for seq_len in args.seq_lens:
    for mode in args.modes:
      for mask in args.masks:
        ours = results.get(f"{mode}/{mask}/T{seq_len}/mixjax_pallas/ms", math.nan)
        for peer in ("cudnn", "jax_triton", "jax_mgpu", "mixjax_xla"):
          theirs = results.get(f"{mode}/{mask}/T{seq_len}/{peer}/ms", math.nan)
          results[f"{mode}/{mask}/T{seq_len}/speed_vs_{peer}"] = theirs / ours
      share = results.get(f"packed/T{seq_len}/block_share", math.nan)
      packed = results.get(f"{mode}/packed/T{seq_len}/mixjax_pallas/ms", math.nan)
      causal = results.get(f"{mode}/causal/T{seq_len}/mixjax_pallas/ms", math.nan)
      results[f"{mode}/T{seq_len}/packed_cost_vs_share"] = packed / causal / share


def _hbm_bytes_per_s(override):
  if override:
    return override * 1e12
  kind = jax.devices()[0].device_kind
  return next((bw for name, bw in HBM_BYTES_PER_S if name in kind), math.nan)


def bench_decode(args, results):
  """One decode step at several batch sizes: live cache bytes / time, vs HBM bandwidth."""
  dtype = jnp.dtype(args.dtype)
  peak = _hbm_bytes_per_s(args.hbm_tbps)
  heads, kv_heads, head_dim, max_len = args.decode_heads, args.decode_kv_heads, args.head_dim, \
      args.decode_len
  print(f"\n{'decode':8} {'B':>4} {'peer':28} {'ms':>9} {'GB/s':>8} {'of HBM':>7}")
  for batch in args.decode_batches:
    kq, kk, kv = jax.random.split(jax.random.key(batch), 3)
    q = jax.random.normal(kq, (batch, heads, head_dim), dtype)
    k = jax.random.normal(kk, (batch, max_len, kv_heads, head_dim), dtype)
    v = jax.random.normal(kv, (batch, max_len, kv_heads, head_dim), dtype)
    # Ragged batch: lengths spread over the upper half of the cache.
    lengths = jnp.asarray(np.random.default_rng(batch).integers(max_len // 2, max_len + 1, batch),
                          jnp.int32)
    live_bytes = 2 * float(jnp.sum(lengths)) * kv_heads * head_dim * dtype.itemsize
    results[f"decode/B{batch}/mixjax_pallas/max_err"] = float(jnp.max(jnp.abs(
        decode_attention.decode_attention(q, k, v, lengths, interpret=args.interpret)
        .astype(jnp.float32)
        - decode_attention.reference_decode_attention(q, k, v, lengths).astype(jnp.float32))))
    peers = {
        "mixjax_pallas": lambda q, k, v, n: decode_attention.decode_attention(
            q, k, v, n, interpret=args.interpret),
        "mixjax_xla": decode_attention.reference_decode_attention,
        "jax_triton": functools.partial(_jax_triton_decode, interpret=args.interpret),
    }
    for peer, fn in peers.items():
      prefix = f"decode/B{batch}/{peer}"
      try:
        ms = time_ms(fn, q, k, v, lengths, iters=args.iters)
      except Exception as e:  # pylint: disable=broad-except
        print(f"  {prefix}: unavailable ({type(e).__name__}: {str(e)[:120]})")
        ms = math.nan
      bandwidth = live_bytes / (ms * 1e-3)
      results[f"{prefix}/ms"] = ms
      results[f"{prefix}/gbps"] = bandwidth / 1e9
      results[f"{prefix}/hbm_fraction"] = bandwidth / peak
      print(f"decode   {batch:4} {peer:28} {ms:9.3f} {bandwidth / 1e9:8.0f} "
            f"{bandwidth / peak:7.2f}")


def _jax_triton_decode(q, k, v, lengths, interpret):
  return jax_triton_decode.gqa(q, k, v, kv_seq_len=lengths, interpret=interpret)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the figures here as one flat JSON object")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes in Pallas interpret mode: checks the script on a CPU")
  parser.add_argument("--seq_lens", type=lambda s: [int(x) for x in s.split(",")],
                      default=[2048, 4096, 8192])
  parser.add_argument("--tokens", type=int, default=16384, help="batch x length")
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--kv_heads", type=int, default=16)
  parser.add_argument("--head_dim", type=int, default=128)
  parser.add_argument("--doc_len", type=int, default=512, help="mean packed document length")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--masks", type=lambda s: s.split(","), default=["causal", "packed"])
  parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
  parser.add_argument("--peers", type=lambda s: s.split(","), default=list(PEERS))
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--sweep", action="store_true",
                      help="also time the mixjax kernel's tile variants in SWEEP")
  parser.add_argument("--decode_batches", type=lambda s: [int(x) for x in s.split(",")],
                      default=[8, 32, 128])
  parser.add_argument("--decode_len", type=int, default=8192)
  parser.add_argument("--decode_heads", type=int, default=32)
  parser.add_argument("--decode_kv_heads", type=int, default=8)
  parser.add_argument("--hbm_tbps", type=float, default=0.0,
                      help="HBM bandwidth in TB/s (default: looked up from the device kind)")
  args = parser.parse_args()
  args.interpret = args.smoke
  if args.smoke:
    args.seq_lens, args.tokens, args.heads, args.kv_heads, args.head_dim = [256], 512, 2, 1, 64
    args.doc_len, args.dtype, args.iters = 48, "float32", 1
    args.decode_batches, args.decode_len, args.decode_heads, args.decode_kv_heads = [2], 256, 4, 2
    args.hbm_tbps = args.hbm_tbps or 0.05  # A nominal figure so the fractions print.
  if args.sweep:
    platform, _ = common.resolve_platform(None, args.interpret)
    for name, change in SWEEP.items():
      block_sizes = dataclasses.replace(platform.block_sizes, **change)
      PEERS[f"mixjax_pallas@{name}"] = functools.partial(_mixjax_pallas, block_sizes=block_sizes)
      args.peers.append(f"mixjax_pallas@{name}")
  results = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
             "dtype": args.dtype, "smoke": args.smoke}
  bench_training(args, results)
  bench_decode(args, results)
  write_json(args.json, results)


def write_json(path, results):
  """One flat JSON object; NaN (a peer that could not run) becomes null."""
  if path:
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
    with open(path, "w") as f:
      json.dump(clean, f, indent=1, sort_keys=True)
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
