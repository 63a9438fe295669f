"""Sampler latency on a GPU: mixjax's sort-free Pallas sampler beside sort-based top-p and top-k.

  python benchmarks/sampling.py --json /tmp/sampling.json            # on an H100 / H200
  python benchmarks/sampling.py --smoke --json /tmp/sampling.json    # CPU: tiny, interpret mode

Latency is device time per call: each sampler runs `--inner` times inside one jitted loop (the key
is folded each time so nothing is hoisted), so host dispatch does not count.
Logits are `3 * N(0, 1)` over the vocabulary: a moderately peaked distribution (top-p 0.9 keeps
a few hundred tokens of 32k). The kernel skips chunks that cannot hold a kept token, so flatter
logits (or top_p near 1) cost it more; the sort-based peers cost the same for any logits.

Peers:
  mixjax_pallas      mixjax.kernels.sampling.sample (the filters of the case).
  sort_top_p         one full sort with indices (lax.sort_key_val), cumulative softmax, thresholds
                     (top-k by rank, min-p, top-p), categorical: the usual sort-based sampler.
  top_k_categorical  lax.top_k(k) then jax.random.categorical (top-k cases only).
  categorical        jax.random.categorical on the raw logits: no filter, a lower bound.
Goal (H100): mixjax_pallas >= 5x faster than sort_top_p at batch >= 16.
"""

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mixjax.kernels import sampling

# Cases: name -> the sampler keyword arguments.
CASES = {
    "top_p": dict(temperature=0.8, top_p=0.9),
    "top_k": dict(temperature=0.8, top_k=50),
    "combined": dict(temperature=0.8, top_k=50, top_p=0.9, min_p=0.05),
}


def _sort_top_p(key, logits_BV, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
  """One sort with indices; every filter is then a cheap test on the sorted row."""
  batch, vocab = logits_BV.shape
  x_BV = logits_BV.astype(jnp.float32) / temperature
  neg_sorted_BV, order_BV = lax.sort_key_val(
      -x_BV, jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), (batch, vocab)))
  probs_BV = jax.nn.softmax(-neg_sorted_BV, axis=-1)
  rank_1V = jnp.arange(vocab)[None, :]
  keep_BV = (rank_1V < (top_k or vocab)) & (probs_BV >= min_p * probs_BV[:, :1])
  # top-p over the top-k set, renormalised.
  kept_probs_BV = jnp.where(keep_BV, probs_BV, 0.0)
  kept_probs_BV /= jnp.sum(kept_probs_BV, axis=-1, keepdims=True)
  keep_BV &= jnp.cumsum(kept_probs_BV, axis=-1) - kept_probs_BV < top_p
  choice_B = jax.random.categorical(key, jnp.where(keep_BV, -neg_sorted_BV, -jnp.inf), axis=-1)
  return jnp.take_along_axis(order_BV, choice_B[:, None], axis=-1)[:, 0]


def _top_k_categorical(key, logits_BV, *, temperature=1.0, top_k=0, **unused):
  del unused
  if not top_k:
    raise ValueError("top-k peer needs top_k > 0")
  values_BK, index_BK = lax.top_k(logits_BV.astype(jnp.float32) / temperature, top_k)
  choice_B = jax.random.categorical(key, values_BK, axis=-1)
  return jnp.take_along_axis(index_BK, choice_B[:, None], axis=-1)[:, 0]


def _categorical(key, logits_BV, **unused):
  del unused
  return jax.random.categorical(key, logits_BV.astype(jnp.float32), axis=-1)


def peers(interpret):
  return {
      "mixjax_pallas": lambda key, logits, **kw: sampling.sample(key, logits, interpret=interpret,
                                                                 **kw),
      "sort_top_p": _sort_top_p,
      "top_k_categorical": _top_k_categorical,
      "categorical": _categorical,
  }


def device_us(sampler, logits_BV, inner, repeats=5):
  """Median device time of one `sampler(key, logits)` call, in microseconds."""
  @jax.jit
  def loop(key, logits_BV):  # An argument, not a constant XLA could fold.
    def body(i, tokens_B):
      # Depend on the previous draw so calls cannot be merged or hoisted.
      return sampler(jax.random.fold_in(key, i + tokens_B[0]), logits_BV)
    return lax.fori_loop(0, inner, body, jnp.zeros(logits_BV.shape[:1], jnp.int32))

  jax.block_until_ready(loop(jax.random.key(0), logits_BV))
  times = []
  for r in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(loop(jax.random.key(r), logits_BV))
    times.append(time.perf_counter() - start)
  return 1e6 * float(np.median(times)) / inner


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the figures here as one flat JSON object")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes in Pallas interpret mode: checks the script on a CPU")
  parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")],
                      default=[1, 16, 64, 256])
  parser.add_argument("--vocabs", type=lambda s: [int(x) for x in s.split(",")],
                      default=[32000, 128256, 256000])
  parser.add_argument("--cases", type=lambda s: s.split(","), default=list(CASES))
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--inner", type=int, default=20, help="calls per timed loop")
  args = parser.parse_args()
  if args.smoke:
    args.batches, args.vocabs, args.inner = [4], [1000], 2
  samplers = peers(interpret=args.smoke)
  results = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
             "smoke": args.smoke, "dtype": args.dtype}
  print(f"{'case':9} {'B':>4} {'V':>7} {'peer':18} {'us':>9} {'x sort':>7}")
  for vocab in args.vocabs:
    for batch in args.batches:
      logits = 3 * jax.random.normal(jax.random.key(vocab + batch), (batch, vocab))
      logits = logits.astype(args.dtype)
      for case in args.cases:
        for peer, fn in samplers.items():
          prefix = f"{case}/B{batch}/V{vocab}/{peer}"
          try:
            us = device_us(lambda key, x, fn=fn: fn(key, x, **CASES[case]), logits, args.inner)
          except (ValueError, NotImplementedError) as e:
            print(f"  {prefix}: skipped ({e})")
            us = math.nan
          results[f"{prefix}/us"] = us
        ours = results[f"{case}/B{batch}/V{vocab}/mixjax_pallas/us"]
        sort = results[f"{case}/B{batch}/V{vocab}/sort_top_p/us"]
        results[f"{case}/B{batch}/V{vocab}/speedup_vs_sort_top_p"] = sort / ours
        for peer in samplers:
          us = results[f"{case}/B{batch}/V{vocab}/{peer}/us"]
          print(f"{case:9} {batch:4} {vocab:7} {peer:18} {us:9.1f} {sort / us:7.2f}")
  if args.json:
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
    with open(args.json, "w") as f:
      json.dump(clean, f, indent=1, sort_keys=True)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
