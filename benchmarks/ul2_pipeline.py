"""Throughput of the UL2 data pipeline: text -> tokens -> denoise -> packed batches, on CPU.

Each case runs the whole SeqIO chain (tokenize, `ul2_denoise`, append EOS, packing feature
converter) over an in-memory corpus and counts the non-padding tokens of the packed batches
(encoder inputs + decoder targets for encoder-decoder, the decoder sequence for decoder-only).
The peer is T5-style span corruption (R1 alone, no mode token) through the same code.

  python benchmarks/ul2_pipeline.py --json /tmp/ul2_pipeline.json

Figures depend on what else runs on the machine: the load average is recorded beside them.
"""

import argparse
import dataclasses
import json
import os
import time
from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from mixjax.data.objectives import denoisers
from mixjax.testbed import corpus as synthetic
from mixjax import vocab

R1_ONLY = denoisers.DEFAULT_DENOISERS[:1]


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  mixture: Sequence[denoisers.Denoiser]
  use_mode_tokens: bool
  sequence_length: Mapping[str, int]
  pack: bool = True  # False: stop after EOS, to see what packing costs


CASES = (
    Case("r1_encdec_512_114", R1_ONLY, False, {"inputs": 512, "targets": 114}),
    Case("r1_encdec_512_512", R1_ONLY, False, {"inputs": 512, "targets": 512}),
    Case("ul2_encdec_512_512", denoisers.DEFAULT_DENOISERS, True, {"inputs": 512, "targets": 512}),
    Case("ul2_encdec_unpacked", denoisers.DEFAULT_DENOISERS, True, {"inputs": 512, "targets": 512},
         pack=False),
    Case("r1_deconly_1024", R1_ONLY, False, {"targets": 1024}),
    Case("ul2_deconly_1024", denoisers.DEFAULT_DENOISERS, True, {"targets": 1024}),
)


def random_word_texts(num_docs: int, seed: int = 0) -> list[str]:
  """Documents of 100-1000 words drawn from 10k random lowercase words."""
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = ["".join(rng.choice(letters, rng.integers(3, 11))) for _ in range(10_000)]
  return [" ".join(rng.choice(words, rng.integers(100, 1001))) for _ in range(num_docs)]


def synthetic_texts(num_docs: int, seed: int = 0) -> list[str]:
  config = synthetic.CorpusConfig(num_docs=num_docs, seed=seed)
  return [doc["text"] for doc in synthetic.iter_documents(config, split="train")]


CORPORA = {"synthetic": synthetic_texts, "random_words": random_word_texts}


def packed_batches(texts: Sequence[str], case: Case, batch_size: int) -> tf.data.Dataset:
  """The case's pipeline over `texts`, repeated forever, as batches of packed model features."""
  features = {k: seqio.Feature(vocab.get_vocabulary()) for k in ("inputs", "targets")}
  ds = tf.data.Dataset.from_tensor_slices({"targets": list(texts)}).repeat()
  ds = seqio.preprocessors.tokenize(ds, features)
  ds = denoisers.ul2_denoise(ds, case.sequence_length, features, denoisers=case.mixture,
                             use_mode_tokens=case.use_mode_tokens)
  ds = seqio.preprocessors.append_eos_after_trim(ds, features, case.sequence_length)
  if not case.pack:
    ds = ds.map(lambda x: {"tokens": tf.size(x["inputs"]) + tf.size(x["targets"])})
  elif "inputs" in case.sequence_length:
    ds = seqio.EncDecFeatureConverter(pack=True)(ds, case.sequence_length)
  else:
    # The prefix-LM converter only uses the sum of the lengths; ul2_denoise budgets the sum.
    length = case.sequence_length["targets"]
    ds = seqio.PrefixLMFeatureConverter(pack=True, apply_length_check=False)(
        ds, {"inputs": length // 2, "targets": length - length // 2})
  # Unpacked examples are small: bigger batches keep Python's per-batch cost out of the figure.
  return ds.batch(batch_size if case.pack else 16 * batch_size).prefetch(2)


def _nonpad_tokens(batch: Mapping[str, np.ndarray]) -> int:
  if "tokens" in batch:  # unpacked: per-example counts
    return int(batch["tokens"].sum())
  keys = ("encoder_input_tokens", "decoder_target_tokens")
  return sum(int(np.count_nonzero(batch[k])) for k in keys if k in batch)


def measure(batches, seconds: float, skip_batches: int = 3) -> tuple[float, float]:
  """Non-padding tokens per wall second and per CPU second of this process, over `seconds`.

  Skipping batches first covers tracing on first use and, later, the batches an idle pipeline
  prefetched while other cases ran. CPU seconds leave out other processes' load, so they show
  the pipeline's cost even on a busy machine.
  """
  for _ in range(skip_batches):
    next(batches)
  tokens, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    tokens += _nonpad_tokens(next(batches))
  return (tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu_start))


def run(corpus: str, num_docs: int, seconds: float, rounds: int, batch_size: int) -> dict:
  """Measures every case, round-robin for `rounds` rounds; returns one flat dict of figures.

  Interleaving the cases spreads the load other processes put on the machine evenly over them;
  each case reports the median of its rounds, and the spread.
  """
  texts = CORPORA[corpus](num_docs)
  figures = {"corpus": corpus, "num_docs": num_docs, "batch_size": batch_size, "rounds": rounds,
             "seconds_per_round": seconds, "cpu_count": os.cpu_count(),
             "corpus_bytes": sum(len(t.encode()) for t in texts)}
  iterators = {c.name: packed_batches(texts, c, batch_size).as_numpy_iterator() for c in CASES}
  rates = {c.name: [] for c in CASES}
  loads = []
  for _ in range(rounds):
    for case in CASES:
      rates[case.name].append(measure(iterators[case.name], seconds))
      loads.append(os.getloadavg()[0])
  for name, values in rates.items():
    wall = [w for w, _ in values]
    figures[f"{name}_tokens_per_s"] = round(float(np.median(wall)))
    figures[f"{name}_tokens_per_s_min"] = round(min(wall))
    figures[f"{name}_tokens_per_s_max"] = round(max(wall))
    figures[f"{name}_tokens_per_cpu_s"] = round(float(np.median([c for _, c in values])))
  figures["load_avg_1min_mean"] = round(float(np.mean(loads)), 2)
  for prefix in ("encdec_512_512", "deconly_1024"):
    figures[f"ul2_over_r1_{prefix}"] = round(
        figures[f"ul2_{prefix}_tokens_per_s"] / figures[f"r1_{prefix}_tokens_per_s"], 3)
  return figures


def print_table(figures: dict) -> None:
  print(f"corpus={figures['corpus']} docs={figures['num_docs']} cpus={figures['cpu_count']} "
        f"rounds={figures['rounds']} load_avg={figures['load_avg_1min_mean']}")
  print(f"{'case':<22} {'tokens/s median':>16} {'min':>11} {'max':>11} {'tokens/CPU-s':>13}")
  for case in CASES:
    name = case.name
    print(f"{name:<22} {figures[name + '_tokens_per_s']:>16,} "
          f"{figures[name + '_tokens_per_s_min']:>11,} {figures[name + '_tokens_per_s_max']:>11,} "
          f"{figures[name + '_tokens_per_cpu_s']:>13,}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--corpus", choices=sorted(CORPORA), default="synthetic")
  parser.add_argument("--docs", type=int, default=20_000, help="documents in memory (repeated)")
  parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per case and round")
  parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the cases")
  parser.add_argument("--batch_size", type=int, default=32, help="packed rows per batch")
  parser.add_argument("--json", help="write the figures here as one flat JSON object")
  args = parser.parse_args()
  figures = run(args.corpus, args.docs, args.seconds, args.rounds, args.batch_size)
  print_table(figures)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  main()
