"""UL2's mixture of denoisers against a plain causal LM at equal row tokens, over seeds.

UL2's claim (Tay et al., 2022) is one model that both infills and continues. Per seed, two arms
train the quickstart model (`gin/quickstart.gin`) from the same initialisation seed on the same
embedded mixture, for the same steps of 16 rows × 256 tokens: `lm` (causal rows) and `ul2`
(`gin/ul2.gin`: the seven denoisers, prefix-LM rows of inputs + targets). Each final checkpoint
scores held-out validation documents of every domain (`mixjax.experiments.ul2_loss`):

- `infill/<domain>/span_loss`: span-corrupted chunks (R1: mean span 3, 15% noise, seed 0); UL2
  reads the corrupted chunk and predicts the spans, the LM predicts the same span tokens left to
  right (it has no infilling format);
- `continuation/<domain>/loss`: the second half of each document after its first half.

Reports mean ± std over seeds per arm and the paired difference `ul2-lm` (nats per byte).

  python benchmarks/ul2_experiment.py --seeds 0 1 2 --json benchmarks/results/ul2_experiment.json
"""

import argparse
import itertools
import os
import time

import mixjax_tasks  # noqa: F401  (registers the synthetic tasks)
from mixjax.experiments import arms as arms_lib
from mixjax.experiments import cli
from mixjax.experiments import summary
from mixjax.experiments import tables
from mixjax.experiments import ul2_loss
from mixjax.testbed import corpus

BASELINE = "lm"
ARMS = {"lm": [], "ul2": ["gin/ul2.gin"]}


def heldout_texts(per_domain: int) -> dict[str, list[str]]:
  """The first `per_domain` validation documents of each domain of the embedded corpus (the
  quickstart mixture's: 20,000 documents, seed 0)."""
  config = corpus.CorpusConfig(num_docs=20_000, seed=0)
  return {domain: [d["text"] for d in itertools.islice(
      corpus.iter_documents(config, "validation", domain), per_domain)]
          for domain in corpus.DOMAINS}


def run_arm(args, seed: int, arm: str, texts: dict[str, list[str]]) -> dict[str, float]:
  """Trains one arm of one seed (unless its final checkpoint exists) and scores it."""
  model_dir = os.path.join(args.workdir, f"seed{seed}", arm)
  start = time.time()
  bindings = [f"--gin.SEED={seed}", f"--gin.TRAIN_STEPS={args.steps}",
              f"--gin.CHECKPOINT_PERIOD={args.steps}", "--gin.EVAL_PERIOD=0",
              f"--gin.MODEL_DIR='{model_dir}'", "--gin.RunConfig.progress_bar=False",
              *[f"--gin.{b}" for b in args.gin]]
  arms_lib.run_arm(model_dir, args.steps, lambda: arms_lib.train_gin(
      args.gin_file + ARMS[arm], bindings, prog="ul2_experiment"))
  trained = time.time()
  out = ul2_loss.ul2_metrics(model_dir, texts)
  out["train/final_loss"] = arms_lib.last_train_line(model_dir)["loss"]
  out.update({"seconds/train": trained - start, "seconds/eval": time.time() - trained})
  return out


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.parser(__doc__.splitlines()[0], "/tmp/mixjax_ul2_experiment")
  parser.add_argument("--steps", type=int, default=300, help="TRAIN_STEPS of both arms")
  parser.add_argument("--docs_per_domain", type=int, default=64,
                      help="held-out validation documents per domain")
  return cli.parse(parser, argv)

def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  start = time.time()
  texts = heldout_texts(args.docs_per_domain)
  per_seed = {seed: {arm: run_arm(args, seed, arm, texts) for arm in ARMS}
              for seed in args.seeds}
  flat = summary.summarise(per_seed, BASELINE)
  flat.update({"steps": args.steps, "docs_per_domain": args.docs_per_domain,
               "wall_seconds": time.time() - start})
  columns = [*ARMS, summary.difference_name("ul2", BASELINE)]
  rows = tables.metric_rows(flat, BASELINE, include=("infill/", "continuation/", "train/"))
  print(tables.markdown(flat, columns, rows, args.seeds))
  summary.write_json(flat, args.json)
  return flat


if __name__ == "__main__":
  main()
