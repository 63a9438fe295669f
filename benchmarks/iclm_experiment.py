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
  that person, a colleague it names, or an unrelated person) and their closed-book controls;
- cross-document use, directly (`mixjax.experiments.context_loss`): each held-out document's
  loss by its position in a context against its loss alone (`ctx/<order>/<pos>/...`, on the
  validation split ordered once by ICLM and once at random, the same contexts for every arm),
  and a held-out bio after a colleague's bio against after an unrelated bio
  (`pair/bios/...`);
- the copy probe (`mixjax.experiments.copy_probe`): a made-up string repeated within one
  document and across an EOS; `copy/<format>/gain` is what the repeat costs less.

`--linked N` adds N pairs of linked documents (`mixjax.experiments.linked_docs`: two short
documents sharing verbatim made-up names, employer, town and project) to the train split, and
N/10 to validation: a cross-document signal that only copying can use. Then
`data/linked_partner_earlier` says how often a linked document's partner came earlier in its
context, and `pair/linked/...` what a held-out linked document costs after its partner against
after another pair's document. Use another `--workdir` than runs without it.

Reports mean ± std over seeds per arm and the paired difference `iclm-random`, plus what each
arm's data looks like (adjacent similarity from the ICLM report; the share of bios with a related
bio earlier in their context).

  python benchmarks/iclm_experiment.py --seeds 0 1 2 --json benchmarks/results/iclm_experiment.json
"""

import argparse
import collections
import glob
import json
import os
import time

import numpy as np
import seqio

from mixjax.data import pipeline
from mixjax.data import tasks
from mixjax.eval import evaluator as evaluation
from mixjax.experiments import arms
from mixjax.experiments import context_loss
from mixjax.experiments import copy_probe
from mixjax.experiments import linked_docs
from mixjax.experiments import made_up
from mixjax.experiments import evaluate
from mixjax.experiments import figures
from mixjax.experiments import summary
from mixjax.experiments import tables
from mixjax.iclm import probes as iclm_probes
from mixjax.iclm import stages as iclm
from mixjax.iclm import task as iclm_seqio
from mixjax.testbed import corpus as synthetic

ARMS = iclm.ORDERS  # ("iclm", "random")
BASELINE = "random"
GIN_FILES = ("gin/quickstart.gin", "gin/iclm.gin")
TRAIN_TASK = "mixjax_iclm"  # the training task's name (its stream seed derives from it)
EVAL_MIXTURE = "iclm_experiment_validation"


def frozen_corpus(workdir: str, num_docs: int, linked: int = 0) -> str:
  """Writes the corpus once (with `linked` pairs of linked documents in train, a tenth as many
  in validation); later runs reuse the files as they are."""
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
    for split, pairs in (("train", linked), ("validation", linked // 10)):
      if pairs:
        with open(os.path.join(corpus, split, f"{linked_docs.DOMAIN}.jsonl"), "w") as f:
          f.writelines(json.dumps(r) + "\n" for r in linked_docs.linked_records(pairs, 0, split))
  path = os.path.join(corpus, "train", f"{linked_docs.DOMAIN}.jsonl")
  written = sum(1 for _ in open(path)) // 2 if os.path.exists(path) else 0
  if written != linked:
    raise ValueError(f"{corpus} holds {written} linked pairs, not {linked}; pass --linked "
                     f"{written} or another --workdir.")
  return corpus


def order_arm(corpus: str, out_dir: str, arm: str, seed: int, args, split: str = "train") -> dict:
  """Runs (or resumes) `mixjax.iclm --order ARM` over one split; returns its report."""
  inputs = tuple(sorted(glob.glob(os.path.join(corpus, split, "*.jsonl"))))
  config = iclm.IclmConfig(inputs=inputs, output_dir=out_dir, context_tokens=args.context_tokens,
                           output_shard_docs=args.output_shard_docs, order=arm, seed=seed,
                           threads=1, progress=False)
  return iclm.run(config)


def stream_domain_mix(out_dir: str, seed: int, num_contexts: int) -> dict[str, float]:
  """Domain shares of the first documents of the first `num_contexts` contexts the training task
  yields with the run's `seed` (the contexts a run of that many rows reads, up to packing)."""
  domain_of = {r["text"]: r["domain"] for _, records in _contexts(out_dir) for r in records}
  iclm_seqio.register_iclm_task(TRAIN_TASK, out_dir)
  task = seqio.get_mixture_or_task(TRAIN_TASK)
  vocab = task.output_features["targets"].vocabulary
  counts = collections.Counter({domain: 0 for domain in set(domain_of.values())})
  # The batch iterator shuffles each task's stream with a seed of its own (seed, task name).
  stream_seed = pipeline.domain_seed(seed, TRAIN_TASK)
  for example in task.get_dataset(None, split="train", shuffle=True,
                                  seed=stream_seed).take(num_contexts):
    tokens = example["targets"].numpy().tolist()
    counts[domain_of[vocab.decode(tokens[:tokens.index(vocab.eos_id)])]] += 1
  total = max(sum(counts.values()), 1)
  return {f"data/first_docs/{domain}": n / total for domain, n in sorted(counts.items())}


def related_in_context(out_dir: str, domain: str = "bios") -> float:
  """Share of `domain`'s documents with an earlier document in their context about the same
  person or a related one (ground truth from the records' `person` / `related_people` fields)."""
  hits = total = 0
  for _, records in _contexts(out_dir):
    seen = set()
    for r in records:
      if r["domain"] == domain:
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


def register_validation_mixture(corpus: str) -> str:
  """A mixture of one LM task per domain over the corpus's validation JSONL (each reported as
  `eval/<domain>/loss`); returns its name."""
  names = []
  for path in sorted(glob.glob(os.path.join(corpus, "validation", "*.jsonl"))):
    domain = os.path.splitext(os.path.basename(path))[0]
    if os.path.getsize(path):
      name = f"{EVAL_MIXTURE}_{domain}"
      tasks.register_jsonl_task(name, {"validation": [path]}, domain=domain)
      names.append(name)
  tasks.register_mixture(EVAL_MIXTURE, [(name, 1.0) for name in names])
  return EVAL_MIXTURE


def heldout_contexts(args, corpus: str) -> dict[str, list[list[str]]]:
  """`{order: contexts}`: the validation split ordered by ICLM and at random (seed 0, the run's
  context budget), `args.context_eval` contexts of each drawn with seed 0: one fixed set that
  every arm is scored on."""
  out = {}
  for order in ARMS:
    out_dir = os.path.join(args.workdir, "heldout", order)
    order_arm(corpus, out_dir, order, 0, args, split="validation")
    contexts = [[r["text"] for r in records] for _, records in _contexts(out_dir)]
    rng = np.random.default_rng(0)
    picked = rng.choice(len(contexts), min(args.context_eval, len(contexts)), replace=False)
    out[order] = [contexts[i] for i in sorted(picked)]
  return out


def context_figures(model_dir: str, contexts: dict[str, list[list[str]]],
                    pairs: dict[str, list[context_loss.Pair]]) -> dict[str, float]:
  """Position, related-pair (`{domain: pairs}`) and copy-probe losses of one trained arm (see
  the module docstring)."""
  scorer = context_loss.ContextScorer(model_dir)
  out = {}
  for order, held_out in contexts.items():
    out.update(context_loss.position_metrics(scorer, held_out, f"ctx/{order}"))
  for domain, domain_pairs in pairs.items():
    out.update(context_loss.pair_metrics(scorer, domain_pairs, f"pair/{domain}"))
  out.update(copy_probe.copy_metrics(scorer.checkpoint, made_up.random_strings(64, seed=0)))
  return out


def data_figures(args, corpus: str, data_dir: str, seed: int, arm: str) -> dict[str, float]:
  """Orders (or reuses) one arm's data and describes it: the ICLM report's figures, related
  bios in context and the domain mix the run reads."""
  report = order_arm(corpus, data_dir, arm, seed, args)
  return {"data/adjacent_similarity": report["adjacent_similarity"],
          "data/contexts": report["contexts"],
          "data/mean_context_tokens": report["mean_context_tokens"],
          "data/related_in_context": related_in_context(data_dir),
          **({"data/linked_partner_earlier": related_in_context(data_dir, linked_docs.DOMAIN)}
             if args.linked else {}),
          **stream_domain_mix(data_dir, seed, args.steps * args.batch_size)}


def train_bindings(args, data_dir: str, model_dir: str, seed: int) -> list[str]:
  return [f"--gin.ICLM_DIR='{data_dir}'", f"--gin.iclm_task.name='{TRAIN_TASK}'",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.SEED={seed}",
          f"--gin.TRAIN_STEPS={args.steps}", f"--gin.BATCH_SIZE={args.batch_size}",
          f"--gin.TASK_FEATURE_LENGTHS={{'targets': {args.context_tokens}}}",
          f"--gin.CHECKPOINT_PERIOD={args.steps}", "--gin.EVAL_PERIOD=0",
          "--gin.RunConfig.progress_bar=False", *[f"--gin.{b}" for b in args.gin]]


def run_arm(args, corpus: str, mixture: str, probes, seed: int, arm: str,
            heldout: tuple | None = None) -> dict[str, float]:
  """Orders, trains (unless a final checkpoint exists) and evaluates one arm of one seed;
  `heldout` (contexts, pairs) adds the context-loss figures."""
  root = os.path.join(args.workdir, f"seed{seed}", arm)
  data_dir, model_dir = os.path.join(root, "data"), os.path.join(root, "model")
  start = time.time()
  out = data_figures(args, corpus, data_dir, seed, arm)
  ordered = time.time()
  arms.run_arm(model_dir, args.steps, lambda: arms.train_gin(
      GIN_FILES + tuple(args.gin_file), train_bindings(args, data_dir, model_dir, seed),
      prog="iclm_experiment"))
  trained = time.time()
  eval_config = evaluation.EvalConfig(num_batches=-(-args.eval_rows // args.eval_batch),
                                      batch_size=args.eval_batch, max_probes=args.probes)
  out.update(evaluate.evaluate_checkpoint(model_dir, mixture, eval_config, extra_probes=probes))
  if heldout is not None:
    out.update(context_figures(model_dir, *heldout))
  out["train/final_loss"] = arms.last_train_line(model_dir)["loss"]
  out.update({"seconds/order": ordered - start, "seconds/train": trained - ordered,
              "seconds/eval": time.time() - trained})
  return out


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
  parser.add_argument("--context_eval", type=int, default=96,
                      help="held-out contexts per order for the position losses")
  parser.add_argument("--pairs", type=int, default=200,
                      help="held-out related pairs per domain (bios, linked)")
  parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                      help="orders to train (one alone, e.g. a calibration, has no difference)")
  parser.add_argument("--linked", type=int, default=0,
                      help="pairs of linked documents (verbatim shared made-up names) added to "
                           "the corpus's train split, a tenth as many to validation")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="extra gin file after gin/quickstart.gin and gin/iclm.gin")
  parser.add_argument("--gin", action="append", default=[], help="extra binding NAME=VALUE")
  parser.add_argument("--workdir", default="/tmp/mixjax_iclm_experiment")
  parser.add_argument("--json", default=None, help="write the flat results here")
  return parser.parse_args(argv)


def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  start, load_start = time.time(), os.getloadavg()[0]
  corpus = frozen_corpus(args.workdir, args.docs, args.linked)
  probes = iclm_probes.probes_from_corpus(corpus, args.probes)
  mixture = register_validation_mixture(corpus)
  pairs = {"bios": context_loss.related_pairs(iclm_probes.load_bios(corpus)[1],
                                              max_pairs=args.pairs)}
  if args.linked:
    records = iclm_probes.read_jsonl(os.path.join(corpus, "validation",
                                                  f"{linked_docs.DOMAIN}.jsonl"))
    pairs[linked_docs.DOMAIN] = context_loss.related_pairs(records, max_pairs=args.pairs)
  heldout = (heldout_contexts(args, corpus), pairs)
  per_seed = {seed: {arm: run_arm(args, corpus, mixture, probes, seed, arm, heldout)
                     for arm in args.arms} for seed in args.seeds}
  baseline = BASELINE if BASELINE in args.arms else args.arms[0]
  flat = summary.summarise(per_seed, baseline)
  flat.update({f"probes/{kind}": len(p) for kind, p in probes.items()})
  flat.update({"steps": args.steps, "batch_size": args.batch_size,
               "context_tokens": args.context_tokens, "docs": args.docs, "linked": args.linked,
               "probe_chance": 1 / (iclm_probes.NUM_DISTRACTORS + 1),
               "wall_seconds": time.time() - start, "load_average_start": load_start,
               "load_average_end": os.getloadavg()[0]})
  columns = [*args.arms,
             *(summary.difference_name(a, baseline) for a in args.arms if a != baseline)]
  print(tables.markdown(flat, columns, tables.metric_rows(flat, baseline, exclude=("seconds/",)),
                        args.seeds))
  summary.write_json(flat, args.json)
  if args.json:
    figures.position_gains(flat, args.arms, ARMS, os.path.splitext(args.json)[0] + "_positions.png")
  return flat


if __name__ == "__main__":
  main()
