"""Proxy swarm vs sequential proxies: K proxies in one jit against K runs of one, equal steps.

  python benchmarks/swarm.py --json benchmarks/results/swarm_cpu.json        # K = 8, 32
  python benchmarks/swarm.py --proxies 8 32 64 --json OUT.json               # on a GPU

Three arms train the same K proxies (the same Dirichlet mixtures and init seed) for equal steps:

- `swarm`: all K at once in one jit (`mixjax.mixing.swarm.Swarm`), `steps_per_call` steps scanned
  per dispatch.
- `sequential`: one training job per proxy, as every public RegMix/DoReMi pipeline runs them:
  mixjax's own jitted train step (`training.trainer`), one dispatch per step, fed by the run's
  batch iterator (`data.pipeline.BatchIterator`) on that proxy's mixture. The step is compiled
  once and reused, and each job's setup (building its iterator, first batch) is timed apart and
  left out of its rate, so the peer is charged only for its steps.
- `sequential_scan`: the swarm's own code at K = 1, run K times (compiled once): what batching
  the proxies alone buys, with the data path and dispatch the same as the swarm's.

Each arm is timed after a warm-up that compiles it. Figures: proxy-steps per second of each arm,
the ratios swarm / sequential and swarm / sequential_scan, per K, and setup and compile seconds.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mixjax_tasks  # noqa: E402,F401  (registers the synthetic tasks)
from mixjax import vocab as vocab_lib  # noqa: E402
from mixjax.data import pipeline  # noqa: E402
from mixjax.mixing import allocation  # noqa: E402
from mixjax.mixing import schedules  # noqa: E402
from mixjax.mixing import swarm as swarm_lib  # noqa: E402
from mixjax.models import transformer  # noqa: E402
from mixjax.training import optim  # noqa: E402
from mixjax.training import partitioning  # noqa: E402
from mixjax.training import trainer  # noqa: E402


def _timed_train(swarm, weights_KD, steps):
  """(seconds, compile seconds) to train `steps` steps of fresh proxies after a warm-up call."""
  start = time.perf_counter()
  state = swarm.init(weights_KD)
  state, _ = swarm.train(state, weights_KD, num_steps=swarm.config.steps_per_call)
  jax.block_until_ready(state.params)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  state, _ = swarm.train(state, weights_KD, num_steps=steps)
  jax.block_until_ready(state.params)
  return time.perf_counter() - start, compile_s


def _trainer_jobs(data, model, optimizer, domains, weights_KD, steps):
  """(seconds in steps, seconds in setup) of one trainer-path job per proxy, run one by one."""
  mesh_config = partitioning.MeshConfig(num_devices=1)
  mesh = partitioning.make_mesh(mesh_config)
  decoder = transformer.build_model(model)
  tx = optim.make_optimizer(optimizer, steps + 1)
  step_fn, step_s, setup_s = None, 0.0, 0.0
  ctx = schedules.context_for(data.mixture_or_task_name, steps + 1, data.batch_size)
  for weights_D in weights_KD:
    start = time.perf_counter()
    state, shardings = trainer.create_state(decoder, tx, mesh, mesh_config.rules,
                                            (1, data.row_length), seed=0)
    step_fn = step_fn or trainer.make_train_step(decoder, tx, mesh, mesh_config.rules, shardings)
    source = schedules.constant_schedule(dict(zip(domains, weights_D))).resolve(ctx)
    batches = pipeline.BatchIterator(
        data, 0, allocation.RowAllocator(source, data.batch_size), pipeline.domain_tasks(
            data.mixture_or_task_name), steps + 1)
    state, metrics = step_fn(state, trainer.global_batch(mesh, next(batches)))  # warm-up
    jax.block_until_ready(metrics)
    setup_s += time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step_fn(state, trainer.global_batch(mesh, next(batches)))
    jax.block_until_ready(metrics)
    step_s += time.perf_counter() - start
  return step_s, setup_s


def _sequential(swarm, weights_KD, steps):
  total, compile_s = 0.0, 0.0
  for k in range(len(weights_KD)):
    seconds, c = _timed_train(swarm, weights_KD[k:k + 1], steps)
    total += seconds
    compile_s = compile_s or c  # the first run compiles; the others reuse it
  return total, compile_s


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--proxies", type=int, nargs="+", default=[8, 32])
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--steps_per_call", type=int, default=25)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--d_model", type=int, default=32)
  parser.add_argument("--num_layers", type=int, default=2)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)

  data = pipeline.DataConfig("mixjax_synthetic_mix", {"targets": args.length}, args.batch_size)
  config = swarm_lib.SwarmConfig(train_steps=args.steps + args.steps_per_call,
                                 batch_size=args.batch_size, pool_rows=256, eval_rows=8,
                                 steps_per_call=args.steps_per_call)
  pools = swarm_lib.build_pools(data, config)
  model = transformer.TransformerConfig(
      vocab_size=vocab_lib.embedding_size(data.vocabulary), d_model=args.d_model,
      num_layers=args.num_layers, num_heads=4, num_kv_heads=2, head_dim=args.d_model // 4,
      mlp_dim=2 * args.d_model)
  optimizer = optim.OptimizerConfig(warmup_steps=5)
  swarm = swarm_lib.Swarm(model, optimizer, pools, config)
  rng = np.random.default_rng(0)
  result = {"steps": args.steps, "batch_size": args.batch_size, "length": args.length,
            "d_model": args.d_model, "num_layers": args.num_layers,
            "device": jax.devices()[0].device_kind, "num_cpu_cores": os.cpu_count()}
  print(f"{'K':>4} {'swarm':>8} {'sequential':>11} {'seq_scan':>9} {'ratio':>6} "
        f"{'ratio_scan':>10}   (proxy-steps/s)")
  for k in args.proxies:
    weights_KD = rng.dirichlet(np.ones(len(pools.domains)), size=k)
    jobs_s, jobs_setup = _trainer_jobs(data, model, optimizer, pools.domains, weights_KD,
                                       args.steps)
    scan_s, scan_compile = _sequential(swarm, weights_KD, args.steps)
    swarm_s, swarm_compile = _timed_train(swarm, weights_KD, args.steps)
    rates = {name: k * args.steps / seconds for name, seconds in
             (("swarm", swarm_s), ("sequential", jobs_s), ("sequential_scan", scan_s))}
    result.update({f"k{k}_{name}_proxy_steps_per_s": r for name, r in rates.items()})
    result.update({f"k{k}_ratio": rates["swarm"] / rates["sequential"],
                   f"k{k}_ratio_vs_scan": rates["swarm"] / rates["sequential_scan"],
                   f"k{k}_sequential_setup_s_per_job": jobs_setup / k,
                   f"k{k}_swarm_compile_s": swarm_compile,
                   f"k{k}_sequential_scan_compile_s": scan_compile})
    print(f"{k:>4} {rates['swarm']:>8.1f} {rates['sequential']:>11.1f} "
          f"{rates['sequential_scan']:>9.1f} {result[f'k{k}_ratio']:>6.2f} "
          f"{result[f'k{k}_ratio_vs_scan']:>10.2f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
