"""In-Context Pretraining ordering: the whole pipeline's cost, and how related neighbours are.

For each corpus size, the embedded corpus (`mixjax.testbed.corpus`, all five domains) is written
once, then `python -m mixjax.iclm` runs in a fresh subprocess (wall time and that process's peak
RSS; per-stage seconds from the stage markers). Quality is measured on the run's own embeddings
and neighbour graph, side by side with the peer, the released ICLM sort (first unvisited among
the top-10 neighbours, clusters of 21), and a random order:

  adjacent_sim   mean cosine similarity of consecutive documents
  related_bios   adjacent bios pairs about the same person or colleagues, per bios document

  python benchmarks/iclm.py --json /tmp/iclm.json                      # 10k, 100k, 1M
  python benchmarks/iclm.py --sizes 10000 --json /tmp/iclm_small.json  # a quick look

Figures depend on what else runs on the machine: the load average is recorded beside them.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from mixjax.iclm import io as iclm_io
from mixjax.iclm import order
from mixjax.iclm import stages
from mixjax.testbed import corpus as synthetic


def corpus_files(work_dir: str, num_docs: int) -> list[str]:
  """Writes (once) the embedded corpus of `num_docs` train documents; returns its train files."""
  out = os.path.join(work_dir, f"corpus_{num_docs}")
  manifest = os.path.join(out, "manifest.json")
  if not os.path.exists(manifest):
    synthetic.write_corpus(out, synthetic.CorpusConfig(num_docs=num_docs, seed=0))
  return [os.path.join(out, "train", f"{d}.jsonl") for d in synthetic.DOMAINS]


def run_pipeline(files: list[str], out_dir: str, threads: int) -> tuple[float, float, float]:
  """Runs the CLI from scratch in a subprocess: (wall seconds, CPU seconds, peak RSS in MiB).

  CPU seconds (user + system, all threads) move little with other processes' load; wall time does.
  """
  cmd = [sys.executable, "-m", "mixjax.iclm", "--input", ",".join(files), "--output", out_dir,
         "--restart", "--no_progress", "--threads", str(threads)]
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status):
    raise RuntimeError(f"{' '.join(cmd)} failed with status {status}.")
  return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def stage_seconds(wd: stages.Workdir, start: float) -> dict[str, float]:
  done = [iclm_io.load_json(os.path.join(wd.stage(s), iclm_io.DONE))["done_at"]
          for s in stages.STAGES]
  return {s: round(t - prev, 2) for s, t, prev in zip(stages.STAGES, done, [start] + done[:-1])}


def related_bios(records: list[dict], order_N: np.ndarray) -> float:
  """Adjacent bios pairs about one person or colleagues, per bios document."""
  ordered = [records[i] for i in order_N.tolist()]
  hits = sum(a["domain"] == b["domain"] == "bios" and (
      b["person"] == a["person"] or b["person"] in a["related_people"])
             for a, b in zip(ordered, ordered[1:]))
  return hits / max(1, sum(r["domain"] == "bios" for r in records))


def quality(files: list[str], out_dir: str, seed: int = 0) -> dict[str, float]:
  """ICLM vs the public greedy sort vs a random order, on the run's embeddings and graph."""
  wd = stages.Workdir(stages.IclmConfig(inputs=tuple(files), output_dir=out_dir))
  index = stages.scan(wd)
  docs = stages.collect_docs(wd, index)
  emb_ND = stages.load_embeddings(wd, docs)
  nbr_NK, _ = stages.load_neighbours(wd)
  records = [json.loads(r) for r in iclm_io.LineReader(index).lines(docs.line_N)]
  start = time.perf_counter()
  public_N = order.public_greedy_order(nbr_NK, seed)
  public_s = time.perf_counter() - start
  orders = {"iclm": stages.order(wd, docs).doc_O, "public_greedy": public_N,
            "random": np.random.default_rng(seed).permutation(len(emb_ND))}
  result = {"public_greedy_traversal_s": round(public_s, 2)}
  for name, order_N in orders.items():
    result[f"adjacent_sim_{name}"] = round(order.adjacent_similarity(emb_ND, order_N), 4)
    result[f"related_bios_{name}"] = round(related_bios(records, order_N), 4)
  return result


def load_average() -> float:
  return round(os.getloadavg()[0], 2)


def main(argv: list[str]) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="10000,100000,1000000", help="documents, comma-separated")
  parser.add_argument("--work_dir", default="/tmp/mixjax_iclm_bench", help="corpora and runs")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--json", help="write the figures here as one flat JSON object")
  args = parser.parse_args(argv)
  results = {"cores": os.cpu_count(), "threads": args.threads}
  sizes = [int(s) for s in args.sizes.split(",")]
  for size in sizes:
    files = corpus_files(args.work_dir, size)
    out_dir = os.path.join(args.work_dir, f"iclm_{size}")
    results[f"load_avg_before_{size}"] = load_average()
    start = time.time()
    wall, cpu, rss = run_pipeline(files, out_dir, args.threads)
    results[f"wall_s_{size}"] = round(wall, 1)
    results[f"cpu_s_{size}"] = round(cpu, 1)
    results[f"peak_rss_mib_{size}"] = round(rss)
    wd = stages.Workdir(stages.IclmConfig(inputs=tuple(files), output_dir=out_dir))
    results.update({f"stage_s_{size}_{k}": v for k, v in stage_seconds(wd, start).items()})
    results.update({f"{k}_{size}": v for k, v in quality(files, out_dir).items()})
  if 100_000 in sizes and 1_000_000 in sizes:
    for cost in ("wall_s", "cpu_s"):
      results[f"{cost}_ratio_1m_over_100k"] = round(
          results[f"{cost}_1000000"] / results[f"{cost}_100000"], 2)
  print_table(results, sizes)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1, sort_keys=True)
  return results


def print_table(results: dict, sizes: list[int]) -> None:
  rows = [("wall s", "wall_s_{}"), ("CPU s", "cpu_s_{}"), ("peak RSS MiB", "peak_rss_mib_{}"),
          ("load avg before", "load_avg_before_{}"),
          ("adjacent sim: ICLM", "adjacent_sim_iclm_{}"),
          ("adjacent sim: public greedy", "adjacent_sim_public_greedy_{}"),
          ("adjacent sim: random", "adjacent_sim_random_{}"),
          ("related bios: ICLM", "related_bios_iclm_{}"),
          ("related bios: public greedy", "related_bios_public_greedy_{}"),
          ("related bios: random", "related_bios_random_{}")]
  rows += [(f"  stage {s} s", f"stage_s_{{}}_{s}") for s in stages.STAGES]
  print(f"{'documents':32s}" + "".join(f"{s:>12d}" for s in sizes))
  for label, key in rows:
    print(f"{label:32s}" + "".join(f"{results[key.format(s)]:>12}" for s in sizes))


if __name__ == "__main__":
  main(sys.argv[1:])
