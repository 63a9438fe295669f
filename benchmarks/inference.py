"""Generation throughput: the KV-cached batched generator against the recompute path, on CPU.

  python benchmarks/inference.py --json benchmarks/results/inference.json
  python benchmarks/inference.py --smoke --json /tmp/inference.json     # seconds: tiny sizes

The quickstart-size decoder (gin/models/small.gin: d_model 128, 4 layers, byte vocabulary padded
to 640), random weights (throughput does not depend on them), prompts of 128 tokens, 256 new
tokens each, greedy, no EOS (every row runs its full budget). Both paths are compiled before
timing; the figure is generated tokens per second of wall time, measured side by side in one run
(round-robin over the cases, best of --rounds).

Peers:
  recompute  `decoding.generate_recompute`: one prompt at a time, a full forward over the whole
             (prompt + new) buffer at every step (batch 1 only: it has no batching).
  cached     `generate.Generator`: prefill, then one-token steps against the KV cache in a jitted
             while_loop, at batch 1 / 16 / 64 (decode attention and sampler: the references on
             CPU, the Pallas kernels on GPU/TPU).
Goals (issue 13): cached batch 1 >= 20x recompute; cached batch 64 >= 30x cached batch 1.
"""

import argparse
import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixjax.data import pipeline
from mixjax.inference import decoding
from mixjax.inference import generate
from mixjax.inference import sampling
from mixjax.models import transformer
from mixjax.training import trainer

SMALL = dict(d_model=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=384)
TINY = dict(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64)


def _model(sizes):
  config = transformer.TransformerConfig(vocab_size=640, **sizes)
  model = transformer.build_model(config)
  dummy = {"decoder_input_tokens": jnp.zeros((1, 8), jnp.int32)}
  params = nn.unbox(model.init(jax.random.key(0), **trainer.model_inputs(dummy))["params"])
  return model, params


def _prompts(batch, length, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 259, size=length).tolist() for _ in range(batch)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", required=True)
  parser.add_argument("--smoke", action="store_true", help="tiny model and lengths")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args(argv)
  sizes, prompt_len, new_tokens, batches = ((TINY, 16, 8, (1, 4)) if args.smoke else
                                            (SMALL, 128, 256, (1, 16, 64)))
  model, params = _model(sizes)
  data = pipeline.DataConfig("unused", {"targets": prompt_len + new_tokens + 1}, 1)
  config = sampling.SamplingConfig(max_new_tokens=new_tokens)
  results = {"backend": jax.default_backend(), "prompt_tokens": prompt_len,
             "new_tokens": new_tokens, "d_model": sizes["d_model"],
             "num_layers": sizes["num_layers"], "rounds": args.rounds}

  # Every recompute step is a full forward over the same (prompt + 256 + 1)-token buffer, so a
  # quarter of the steps, timed, gives its per-token rate at a quarter of the cost.
  prompt = _prompts(1, prompt_len)[0]
  recompute_tokens = max(1, new_tokens // 4)
  cases = {"recompute_b1": (recompute_tokens, lambda: decoding.generate_recompute(
      model.apply, params, prompt, max_new_tokens=recompute_tokens, eos_id=-1,
      max_length=prompt_len + new_tokens + 1))}
  gen = generate.Generator(model, params, data)
  for batch in batches:
    feats = generate.prompt_batch(data, _prompts(batch, prompt_len, seed=batch))
    feats = {k: jnp.asarray(v) for k, v in feats.items()}
    cases[f"cached_b{batch}"] = (batch * new_tokens,
                                 functools.partial(gen, feats, config, eos_id=-1))
  for _, fn in cases.values():
    fn()  # compile
  # Round-robin, best of `rounds`: load from other processes hits every case alike.
  best = {name: float("inf") for name in cases}
  for _ in range(args.rounds):
    for name, (_, fn) in cases.items():
      start = time.perf_counter()
      jax.block_until_ready(fn().tokens_BN if name.startswith("cached") else fn())
      best[name] = min(best[name], time.perf_counter() - start)
  for name, (tokens, _) in cases.items():
    results[f"{name}_tokens_per_sec"] = tokens / best[name]
    print(f"{name:14s} {tokens / best[name]:10.1f} tokens/s (best {best[name]:.2f} s)")
  first, last = batches[0], batches[-1]
  results["cached_b1_over_recompute"] = (results[f"cached_b{first}_tokens_per_sec"]
                                         / results["recompute_b1_tokens_per_sec"])
  results[f"cached_b{last}_over_b{first}"] = (results[f"cached_b{last}_tokens_per_sec"]
                                              / results[f"cached_b{first}_tokens_per_sec"])
  results["load_average_1min"] = os.getloadavg()[0]
  print(json.dumps(results, indent=1))
  with open(args.json, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
