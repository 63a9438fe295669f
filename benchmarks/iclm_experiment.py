"""In-Context Pretraining vs a random document order at equal steps on the embedded corpus, by seed.

The experiment of Shi et al. (2024) at quickstart scale. One frozen corpus is written to the
workdir (later changes to `mixjax.testbed.corpus` cannot shift it). Per seed, `mixjax.iclm` orders
its train split twice with that seed, `--order iclm` (related documents share a context) and
`--order random` (same context cutting and output format); the quickstart model (gin/quickstart.gin
+ gin/iclm.gin) trains on each arm for the same steps, batch and row length, so both arms see the
same number of rows. Output shards are small (`--output_shard_docs`): the task shuffles shards, then
contexts in a 1,000-context buffer, and over a few large shards that buffer would follow the ICLM
order's runs of one domain (a first run with one shard trained its ICLM arm on 53% prose and 40%
code). `data/first_docs/<domain>` records the mix a run reads. Each final checkpoint is then
evaluated on:

- per-domain validation loss (nats per byte) on the frozen corpus's validation JSONL, documents
  packed in their usual order (no ICLM context);
- the cross-document probes of `mixjax.iclm.probes` (a held-out bio, EOS, a statement about
  that person, a colleague it names, or an unrelated person) and their closed-book controls.

Reports mean ± std over seeds per arm and the paired difference `iclm-random`, plus what each
arm's data looks like (adjacent similarity from the ICLM report; the share of bios with a related
bio earlier in their context).

  python benchmarks/iclm_experiment.py --seeds 0 1 2 --json benchmarks/results/iclm_experiment.json
"""

import argparse
import collections
import dataclasses
import glob
import json
import os
import time

import gin
import numpy as np
import seqio

from mixjax import gin_utils
from mixjax.iclm import stages as iclm
from mixjax.iclm import probes as iclm_probes
from mixjax.iclm import task as iclm_seqio
from mixjax.data import tasks as lm_tasks
from mixjax.testbed import corpus as synthetic
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.eval import context_probes
from mixjax.eval import evaluator as evaluation
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from mixjax.training import partitioning

ARMS = iclm.ORDERS  # ("iclm", "random"): the second is the baseline
GIN_FILES = ("gin/quickstart.gin", "gin/iclm.gin")
_EVAL_MIXTURE = "iclm_experiment_validation"


def frozen_corpus(workdir: str, num_docs: int) -> str:
  """Writes the corpus once; later runs reuse the files as they are."""
  corpus = os.path.join(workdir, "corpus")
  manifest = os.path.join(corpus, "manifest.json")
  if os.path.exists(manifest):
    with open(manifest) as f:
      written = json.load(f)["config"]["num_docs"]
    if written != num_docs:
      raise ValueError(f"{corpus} holds a {written}-document corpus, not {num_docs}; pass "
                       f"--docs {written} or another --workdir.")
  else:
    synthetic.write_corpus(corpus, synthetic.CorpusConfig(num_docs=num_docs, seed=0))
  return corpus


def order_arm(corpus: str, out_dir: str, arm: str, seed: int, args) -> dict:
  """Runs (or resumes) `mixjax.iclm --order ARM` over the train split; returns its report."""
  inputs = tuple(sorted(glob.glob(os.path.join(corpus, "train", "*.jsonl"))))
  config = iclm.IclmConfig(inputs=inputs, output_dir=out_dir, context_tokens=args.context_tokens,
                           output_shard_docs=args.output_shard_docs, order=arm, seed=seed,
                           threads=1, progress=False)
  return iclm.run(config)


def stream_domain_mix(out_dir: str, seed: int, num_contexts: int) -> dict[str, float]:
  """Domain shares of the first documents of the first `num_contexts` contexts the SeqIO task
  yields with `seed` (the contexts a run of that many rows reads, up to packing)."""
  domain_of = {r["text"]: r["domain"] for _, records in _contexts(out_dir) for r in records}
  task = iclm_seqio.register_iclm_task("iclm_experiment_mix", out_dir)
  vocab = task.output_features["targets"].vocabulary
  counts = collections.Counter({domain: 0 for domain in set(domain_of.values())})
  for example in task.get_dataset(None, split="train", shuffle=True, seed=seed).take(num_contexts):
    tokens = example["targets"].numpy().tolist()
    counts[domain_of[vocab.decode(tokens[:tokens.index(vocab.eos_id)])]] += 1
  total = max(sum(counts.values()), 1)
  return {f"data/first_docs/{domain}": n / total for domain, n in sorted(counts.items())}


def related_in_context(out_dir: str) -> float:
  """Share of bios documents with an earlier document in their context about the same person
  or a colleague (ground truth from the corpus's `person` / `related_people` fields)."""
  hits = total = 0
  for _, records in _contexts(out_dir):
    seen = set()
    for r in records:
      if r["domain"] == "bios":
        total += 1
        hits += bool(seen & {r["person"], *r["related_people"]})
        seen.add(r["person"])
  return hits / max(total, 1)


def _contexts(out_dir: str):
  """Yields (context, records) from an ICLM output directory, in order."""
  records = [r for p in iclm_seqio.output_shard_paths(out_dir) for r in iclm_probes.read_jsonl(p)]
  by_context = collections.defaultdict(list)
  for r in records:
    by_context[r["context"]].append(r)
  return sorted(by_context.items())


def train_arm(gin_files, bindings) -> None:
  gin.clear_config()
  gin_utils.parse_and_bind([f"--gin_file={f}" for f in gin_files] + bindings,
                           prog="iclm_experiment")
  loop.train()


def register_validation_mixture(corpus: str) -> str:
  """A mixture of one LM task per domain over the corpus's validation JSONL; returns its name."""
  tasks = []
  for path in sorted(glob.glob(os.path.join(corpus, "validation", "*.jsonl"))):
    domain = os.path.splitext(os.path.basename(path))[0]
    if os.path.getsize(path):
      name = f"{_EVAL_MIXTURE}_{domain}"
      lm_tasks.register_jsonl_task(name, {"validation": [path]})
      lm_tasks.TASK_DOMAINS[name] = domain  # report as eval/<domain>/loss
      tasks.append(name)
  seqio.MixtureRegistry.remove(_EVAL_MIXTURE)
  seqio.MixtureRegistry.add(_EVAL_MIXTURE, [(t, 1.0) for t in tasks])
  return _EVAL_MIXTURE


def evaluate_checkpoint(model_dir: str, mixture: str, probes: dict[str, list[dict]],
                        eval_config: evaluation.EvalConfig) -> dict[str, float]:
  """Validation loss per domain (and their mean) and accuracy per probe kind."""
  model_config, data_config, params = checkpoints.restore_for_inference(model_dir)
  mesh_config = partitioning.MeshConfig(shape=(1, 1, 1), num_devices=1)
  evaluator = evaluation.Evaluator(
      transformer.build_model(model_config), partitioning.make_mesh(mesh_config),
      mesh_config.rules, dataclasses.replace(data_config, mixture_or_task_name=mixture),
      eval_config)
  # The probes need EOS between documents, which the text-prompt probes cannot hold.
  evaluator.probes = {kind: context_probes.probe_batch(p) for kind, p in probes.items() if p}
  metrics = evaluator.evaluate(params)
  metrics["eval/mean/loss"] = float(np.mean([v for k, v in metrics.items()
                                             if k.startswith("eval/")]))
  return {k: float(v) for k, v in metrics.items()}


def run_arm(args, corpus: str, mixture: str, probes, seed: int, arm: str) -> dict[str, float]:
  """Orders, trains (unless a final checkpoint exists) and evaluates one arm of one seed."""
  root = os.path.join(args.workdir, f"seed{seed}", arm)
  start = time.time()
  data_dir = os.path.join(root, "data")
  report = order_arm(corpus, data_dir, arm, seed, args)
  out = {"data/adjacent_similarity": report["adjacent_similarity"],
         "data/contexts": report["contexts"],
         "data/mean_context_tokens": report["mean_context_tokens"],
         "data/related_in_context": related_in_context(data_dir),
         **stream_domain_mix(data_dir, seed, args.steps * args.batch_size)}
  model_dir = os.path.join(root, "model")
  ordered = time.time()
  if not os.path.exists(os.path.join(model_dir, "checkpoints", str(args.steps))):
    train_arm(GIN_FILES + tuple(args.gin_file), [
        f"--gin.ICLM_DIR='{data_dir}'", f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.SEED={seed}", f"--gin.TRAIN_STEPS={args.steps}",
        f"--gin.BATCH_SIZE={args.batch_size}",
        f"--gin.TASK_FEATURE_LENGTHS={{'targets': {args.context_tokens}}}",
        f"--gin.CHECKPOINT_PERIOD={args.steps}", "--gin.EVAL_PERIOD=0",
        "--gin.RunConfig.progress_bar=False", *[f"--gin.{b}" for b in args.gin]])
  trained = time.time()
  out.update(evaluate_checkpoint(model_dir, mixture, probes, evaluation.EvalConfig(
      num_batches=-(-args.eval_rows // args.eval_batch), batch_size=args.eval_batch)))
  out["train/final_loss"] = [m for m in metrics_lib.read_metrics(model_dir) if "loss" in m][-1][
      "loss"]
  out.update({"seconds/order": ordered - start, "seconds/train": trained - ordered,
              "seconds/eval": time.time() - trained})
  return out


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, float]:
  """Flat JSON: every seed's figures, then mean/std over seeds of each arm and of the paired
  difference `iclm-random`."""
  flat = {f"seed{seed}/{arm}/{k}": v for seed, arms in per_seed.items()
          for arm, figures in arms.items() for k, v in figures.items()}
  first = next(iter(per_seed.values()))
  baseline = ARMS[-1]
  for k in sorted(first[baseline]):
    values = {arm: np.asarray([per_seed[s][arm][k] for s in per_seed], np.float64)
              for arm in ARMS}
    values.update({f"{arm}-{baseline}": values[arm] - values[baseline] for arm in ARMS[:-1]})
    for name, v in values.items():
      flat[f"mean/{name}/{k}"] = float(v.mean())
      flat[f"std/{name}/{k}"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
  return flat


def table(flat: dict[str, float], seeds) -> str:
  """Markdown: mean ± std over seeds per metric; the difference is paired by seed."""
  columns = [*ARMS, f"{ARMS[0]}-{ARMS[-1]}"]
  prefix = f"mean/{ARMS[-1]}/"
  rows = sorted(k[len(prefix):] for k in flat
                if k.startswith(prefix) and not k.startswith(prefix + "seconds/"))
  def cell(name, k):
    return f"{flat[f'mean/{name}/{k}']:.3f} ± {flat[f'std/{name}/{k}']:.3f}"
  header = f"| metric ({len(seeds)} seeds: {', '.join(map(str, seeds))}) | {' | '.join(columns)} |"
  lines = [header, "|" + " --- |" * (len(columns) + 1)]
  lines += [f"| {k} | {' | '.join(cell(c, k) for c in columns)} |" for k in rows]
  return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=300, help="TRAIN_STEPS of every arm")
  parser.add_argument("--batch_size", type=int, default=4, help="rows per step")
  parser.add_argument("--context_tokens", type=int, default=768,
                      help="ICLM context budget and row length (targets)")
  parser.add_argument("--docs", type=int, default=20_000, help="train documents of the corpus")
  parser.add_argument("--output_shard_docs", type=int, default=20,
                      help="documents per ICLM output shard (small: contexts shuffle globally)")
  parser.add_argument("--probes", type=int, default=100, help="probes per kind")
  parser.add_argument("--eval_rows", type=int, default=48, help="validation rows per domain")
  parser.add_argument("--eval_batch", type=int, default=16, help="rows per eval batch")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="extra gin file after gin/quickstart.gin and gin/iclm.gin")
  parser.add_argument("--gin", action="append", default=[], help="extra binding NAME=VALUE")
  parser.add_argument("--workdir", default="/tmp/mixjax_iclm_experiment")
  parser.add_argument("--json", default=None, help="write the flat results here")
  return parser.parse_args(argv)


def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  start, load_start = time.time(), os.getloadavg()[0]
  corpus = frozen_corpus(args.workdir, args.docs)
  probes = iclm_probes.probes_from_corpus(corpus, args.probes)
  mixture = register_validation_mixture(corpus)
  per_seed = {seed: {arm: run_arm(args, corpus, mixture, probes, seed, arm) for arm in ARMS}
              for seed in args.seeds}
  flat = summarise(per_seed)
  flat.update({f"probes/{kind}": len(p) for kind, p in probes.items()})
  flat.update({"steps": args.steps, "batch_size": args.batch_size,
               "context_tokens": args.context_tokens, "docs": args.docs,
               "probe_chance": 1 / (iclm_probes.NUM_DISTRACTORS + 1),
               "wall_seconds": time.time() - start, "load_average_start": load_start,
               "load_average_end": os.getloadavg()[0]})
  print(table(flat, args.seeds))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(flat, f, indent=1, sort_keys=True)
  return flat


if __name__ == "__main__":
  main()
