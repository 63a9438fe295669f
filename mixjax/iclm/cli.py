r"""Reorders a JSONL corpus for In-Context Pretraining: related documents share training contexts.

  python -m mixjax.iclm --input DOCS.jsonl[,MORE.jsonl] --output DIR

DIR gets `iclm-*-of-*.jsonl` (every input field, plus `context`), `report.json` (how similar
adjacent documents are, against a random order; what was skipped) and `stages/` (resumable
intermediate files: rerun the same command after a crash). `--runner=beam` runs the embedding and
neighbour stages as an Apache Beam pipeline (`pip install -e '.[beam]'`). The SeqIO task over DIR is
`mixjax.iclm.task.register_iclm_task`. The logic lives in `mixjax.iclm.stages`.

`--order random` writes the baseline for training experiments: the same documents, contexts cut
and written the same way, in a seeded random order (no neighbour search).
"""

import argparse
import dataclasses
import glob
import json
import sys

from mixjax import console

console.quiet_start()  # before anything loads TensorFlow

from mixjax.iclm import knn  # noqa: E402
from mixjax.iclm import stages  # noqa: E402
# A binary may import every layer; the stages cannot import the model this embedder runs.
import mixjax.inference.embedder  # noqa: E402,F401  (registers --embedder checkpoint)


def _inputs(value: str) -> tuple[str, ...]:
  paths = []
  for item in filter(None, value.split(",")):
    if glob.has_magic(item):
      matched = sorted(glob.glob(item))
      if not matched:
        raise argparse.ArgumentTypeError(f"no files match {item!r} (quote globs so the shell "
                                         "leaves them to mixjax)")
      paths.extend(matched)
    else:
      paths.append(item)  # existence is checked when the run starts (stages.check_inputs)
  if not paths:
    raise argparse.ArgumentTypeError("no input files given")
  return tuple(paths)


def _worker(value: str) -> stages.Worker:
  index, sep, count = value.partition("/")
  try:
    return stages.Worker(int(index), int(count))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"{value!r}: expected I/N with 0 <= I < N (worker I of N), e.g. 0/2 and 1/2"
        f"{'' if sep else ' (the /N is missing)'}") from None


def _at_least(minimum: int):
  def parse(value: str) -> int:
    try:
      number = int(value)
    except ValueError:
      number = minimum - 1
    if number < minimum:
      raise argparse.ArgumentTypeError(f"{value!r} is not an integer >= {minimum}")
    return number
  return parse


_positive = _at_least(1)


def _similarity(value: str) -> float:
  try:
    number = float(value)
  except ValueError:
    number = float("nan")
  if not -1.0 <= number <= 1.0:
    raise argparse.ArgumentTypeError(f"{value!r} is not a cosine similarity in [-1, 1] "
                                     "(e.g. 0.95)")
  return number


# A context that holds this few documents on average makes ordering (nearly) pointless.
_FEW_DOCS_PER_CONTEXT = 1.2


def context_warning(report: dict, context_tokens: int) -> str | None:
  """A warning when `--context_tokens` leaves about one document per context."""
  documents, contexts = report.get("documents") or 0, report.get("contexts") or 0
  if documents < 2 or not contexts or documents / contexts >= _FEW_DOCS_PER_CONTEXT:
    return None
  mean = (report.get("mean_context_tokens") or 0) * contexts / documents
  return (f"warning: --context_tokens {context_tokens} gives {documents / contexts:.2f} documents "
          f"per context (documents average {mean:.0f} tokens), so the order has almost no effect "
          f"on training; use --context_tokens of several documents, e.g. {int(4 * mean)}.")


def parse_args(argv: list[str]) -> argparse.Namespace:
  d = stages.IclmConfig(inputs=("-",), output_dir="")
  p = argparse.ArgumentParser(prog="python -m mixjax.iclm", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input", type=_inputs, required=True, help="JSONL files, comma-separated; globs ok")
  p.add_argument("--output", required=True, help="output directory")
  p.add_argument("--embedder", default=d.embedder, choices=sorted(stages.EMBEDDERS))
  p.add_argument("--embedder_path", default="", help="; ".join(
      f"{s.name}: {s.path}" for s in sorted(stages.EMBEDDERS.values(), key=lambda s: s.name)
      if s.path))
  p.add_argument("--dim", type=_positive, default=d.dim, help="hashed embedding width")
  p.add_argument("--fit_docs", type=_positive, default=d.fit_docs, help="IDF sample size")
  p.add_argument("--k", type=_positive, default=d.k, help="neighbours per document")
  p.add_argument("--index", default=d.index.kind, choices=("auto",) + knn.INDEX_KINDS)
  p.add_argument("--nlist", type=_at_least(0), default=d.index.nlist,
                 help="IVF lists (0: ~4 sqrt(N))")
  p.add_argument("--nprobe", type=_positive, default=d.index.nprobe, help="IVF lists searched")
  p.add_argument("--min_path_docs", type=_positive, default=d.min_path_docs)
  p.add_argument("--context_tokens", type=_positive, default=d.context_tokens)
  p.add_argument("--order", default=d.order, choices=stages.ORDERS,
                 help="iclm: related documents together; random: the baseline (same contexts "
                      "and output format, documents in a seeded random order)")
  p.add_argument("--dedup_threshold", type=_similarity, default=None,
                 help="drop documents at least this similar to the previous one (default: off)")
  p.add_argument("--shard_lines", type=_positive, default=d.shard_lines)
  p.add_argument("--output_shard_docs", type=_positive, default=d.output_shard_docs)
  p.add_argument("--skip_bad_records", action="store_true",
                 help="count and skip bad lines and repeated ids instead of stopping")
  p.add_argument("--seed", type=_at_least(0), default=d.seed)
  p.add_argument("--threads", type=_positive, default=d.threads)
  p.add_argument("--until", default="write", choices=stages.STAGES, help="last stage to run")
  p.add_argument("--worker", type=_worker, default=stages.Worker(),
                 help="I/N: this worker's shards")
  p.add_argument("--restart", action="store_true", help="discard an earlier run in --output")
  p.add_argument("--no_progress", action="store_true")
  p.add_argument("--runner", default="local", choices=("local", "beam"))
  p.add_argument("--beam_options", default="--runner=DirectRunner",
                 help="Beam pipeline options, space-separated")
  return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> stages.IclmConfig:
  index = dataclasses.replace(knn.IndexSpec(), kind=args.index, nlist=args.nlist,
                              nprobe=args.nprobe)
  return stages.IclmConfig(
      inputs=args.input, output_dir=args.output, embedder=args.embedder,
      embedder_path=args.embedder_path, dim=args.dim, fit_docs=args.fit_docs, k=args.k,
      index=index, min_path_docs=args.min_path_docs, context_tokens=args.context_tokens,
      order=args.order,
      dedup_threshold=args.dedup_threshold, shard_lines=args.shard_lines,
      output_shard_docs=args.output_shard_docs, skip_bad_records=args.skip_bad_records,
      seed=args.seed, threads=args.threads, progress=not args.no_progress)


def main(argv: list[str]) -> int:
  try:
    args = parse_args(argv)
  except SystemExit as e:  # argparse printed what is wrong; return its status like other errors
    return e.code if isinstance(e.code, int) else 2
  config = config_from_args(args)
  try:
    if args.runner == "beam":
      from mixjax.iclm import beam  # pylint: disable=g-import-not-at-top  (optional extra)
      report = beam.run(config, args.beam_options.split(), restart=args.restart)
    else:
      report = stages.run(config, until=args.until, worker=args.worker, restart=args.restart)
  except stages.StagePending as e:
    print(e, file=sys.stderr)
    return 0
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if report is not None:
    warning = context_warning(report, config.context_tokens)
    if warning:
      print(warning, file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("order", "documents", "contexts",
                                              "adjacent_similarity", "random_order_similarity")} |
                     {"skipped": report["skipped"]["total"]}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
