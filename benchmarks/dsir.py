"""DSIR selection time: hash, fit both bag-of-buckets models, weigh and select, on N documents.

  python benchmarks/dsir.py --docs 1000000 --json benchmarks/results/dsir_cpu.json

The raw pool is the testbed's train split (`--corpus_docs` generated documents, all domains)
repeated to `--docs` documents (generating a million testbed documents takes longer than DSIR
itself; the per-byte work is the same); the target is 500 held-out documents of testbed target
bios3_math1. Times the selection alone (`mixjax.mixing.dsir.select`), wall and CPU seconds.
Goal: 1M documents in at most 2 minutes on 2 cores.
"""

import argparse
import itertools
import json
import time

from mixjax.mixing import dsir
from mixjax.testbed import corpus
from mixjax.testbed import targets


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--docs", type=int, default=1_000_000)
  parser.add_argument("--corpus_docs", type=int, default=20_000)
  parser.add_argument("--k", type=int, default=100_000)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  config = corpus.CorpusConfig(num_docs=args.corpus_docs)
  docs = list(corpus.iter_documents(config, "train"))
  base, base_domains = [d["text"] for d in docs], [d["domain"] for d in docs]
  raw = list(itertools.islice(itertools.cycle(base), args.docs))
  target = [d["text"] for d in targets.documents(config, "bios3_math1", 500)]
  cpu, wall = time.process_time(), time.perf_counter()
  index, _ = dsir.select(raw, target, args.k)
  result = {"docs": args.docs, "raw_mbytes": sum(map(len, raw)) / 1e6, "k": args.k,
            "select_wall_s": time.perf_counter() - wall, "select_cpu_s": time.process_time() - cpu,
            **{f"selected_share_{d}": sum(base_domains[i % len(base)] == d for i in index)
               / len(index) for d in corpus.DOMAINS}}
  print(json.dumps(result, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
