"""Throughput of the UL2 data pipeline: text -> tokens -> denoise -> packed batches, on CPU.

Each case runs the whole SeqIO chain (tokenize, `ul2_denoise`, append EOS, packing feature
converter) over an in-memory corpus and counts the non-padding tokens of the packed batches
(encoder inputs + decoder targets for encoder-decoder, the decoder sequence for decoder-only).
The peer is T5's span corruption (R1 alone: 15% noise, mean span 3, no mode token) through the
same code. Every packed case runs with each packer: SeqIO's converters (`seqio`, T5's setting)
and mixjax's (`mixjax`: `mixjax.data.features.Packed*`, the pipeline's default); the fill rate
is the non-padding share of the packed rows. Both corpora run in one process, round-robin.

  python benchmarks/ul2_pipeline.py --json benchmarks/results/ul2_pipeline.json

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

from mixjax.data import features as features_lib
from mixjax.data.objectives import denoisers
from mixjax.testbed import corpus as synthetic
from mixjax import vocab

R1_ONLY = denoisers.DEFAULT_DENOISERS[:1]
PACKERS = ("seqio", "mixjax")


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  mixture: Sequence[denoisers.Denoiser]
  use_mode_tokens: bool
  sequence_length: Mapping[str, int]
  packer: str | None = "mixjax"  # None: stop after EOS, to see what packing costs

  @property
  def key(self) -> str:
    return f"{self.name}_{self.packer or 'unpacked'}"


def _cases() -> tuple[Case, ...]:
  base = (("r1_encdec_512_114", R1_ONLY, False, {"inputs": 512, "targets": 114}),
          ("r1_encdec_512_512", R1_ONLY, False, {"inputs": 512, "targets": 512}),
          ("ul2_encdec_512_512", denoisers.DEFAULT_DENOISERS, True,
           {"inputs": 512, "targets": 512}),
          ("r1_deconly_1024", R1_ONLY, False, {"targets": 1024}),
          ("ul2_deconly_1024", denoisers.DEFAULT_DENOISERS, True, {"targets": 1024}))
  cases = [Case(*args, packer=p) for args in base for p in PACKERS]
  cases.append(Case(*base[2], packer=None))
  return tuple(cases)


CASES = _cases()
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


CONVERTERS = {  # (packer, layout) -> converter
    ("seqio", "enc_dec"): lambda: seqio.EncDecFeatureConverter(pack=True),
    ("seqio", "prefix_lm"): lambda: seqio.PrefixLMFeatureConverter(pack=True,
                                                                   apply_length_check=False),
    ("mixjax", "enc_dec"): lambda: features_lib.feature_converter("enc_dec"),
    ("mixjax", "prefix_lm"): lambda: features_lib.feature_converter("prefix_lm"),
}


def packed_batches(texts: Sequence[str], case: Case, batch_size: int) -> tf.data.Dataset:
  """The case's pipeline over `texts`, repeated forever, as batches of packed model features."""
  features = {k: seqio.Feature(vocab.get_vocabulary()) for k in ("inputs", "targets")}
  ds = tf.data.Dataset.from_tensor_slices({"targets": list(texts)}).repeat()
  ds = seqio.preprocessors.tokenize(ds, features)
  ds = denoisers.ul2_denoise(ds, case.sequence_length, features, denoisers=case.mixture,
                             use_mode_tokens=case.use_mode_tokens)
  ds = seqio.preprocessors.append_eos_after_trim(ds, features, case.sequence_length)
  if case.packer is None:
    ds = ds.map(lambda x: {"tokens": tf.size(x["inputs"]) + tf.size(x["targets"])})
  elif "inputs" in case.sequence_length:
    ds = CONVERTERS[case.packer, "enc_dec"]()(ds, case.sequence_length)
  else:
    # The prefix-LM converter only uses the sum of the lengths; ul2_denoise budgets the sum.
    length = case.sequence_length["targets"]
    ds = CONVERTERS[case.packer, "prefix_lm"]()(
        ds, {"inputs": length // 2, "targets": length - length // 2})
  # Unpacked examples are small: bigger batches keep Python's per-batch cost out of the figure.
  return ds.batch(batch_size if case.packer else 16 * batch_size).prefetch(2)


def _token_counts(batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
  """Non-padding tokens and row slots (0 for unpacked per-example counts) of a batch."""
  if "tokens" in batch:
    return int(batch["tokens"].sum()), 0
  keys = [k for k in ("encoder_input_tokens", "decoder_target_tokens") if k in batch]
  return (sum(int(np.count_nonzero(batch[k])) for k in keys),
          sum(int(batch[k].size) for k in keys))


def measure(batches, seconds: float, skip_batches: int = 3) -> tuple[float, float, float]:
  """Non-padding tokens per wall second and per CPU second of this process over `seconds`, and
  the fill rate (non-padding share of the rows' slots; nan unpacked).

  Skipping batches first covers tracing on first use and, later, the batches an idle pipeline
  prefetched while other cases ran. CPU seconds leave out other processes' load, so they show
  the pipeline's cost even on a busy machine.
  """
  for _ in range(skip_batches):
    next(batches)
  tokens, slots, start, cpu_start = 0, 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    t, s = _token_counts(next(batches))
    tokens, slots = tokens + t, slots + s
  return (tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu_start),
          tokens / slots if slots else float("nan"))


def run(corpora: Sequence[str], num_docs: Mapping[str, int], seconds: float, rounds: int,
        batch_size: int) -> dict:
  """Measures every case on every corpus, round-robin for `rounds` rounds; returns one flat dict.

  Interleaving the cases spreads the load other processes put on the machine evenly over them;
  each case reports the median of its rounds, and the spread. Keys: `<corpus>/<case>_<packer>_*`.
  """
  figures = {"batch_size": batch_size, "rounds": rounds, "seconds_per_round": seconds,
             "cpu_count": os.cpu_count()}
  iterators = {}
  for corpus in corpora:
    texts = CORPORA[corpus](num_docs[corpus])
    figures[f"{corpus}/num_docs"] = num_docs[corpus]
    figures[f"{corpus}/corpus_bytes"] = sum(len(t.encode()) for t in texts)
    for case in CASES:
      iterators[corpus, case.key] = packed_batches(texts, case, batch_size).as_numpy_iterator()
  rates = {k: [] for k in iterators}
  loads = []
  for _ in range(rounds):
    for k, batches in iterators.items():
      rates[k].append(measure(batches, seconds))
      loads.append(os.getloadavg()[0])
  for (corpus, key), values in rates.items():
    wall = [w for w, _, _ in values]
    name = f"{corpus}/{key}"
    figures[f"{name}_tokens_per_s"] = round(float(np.median(wall)))
    figures[f"{name}_tokens_per_s_min"] = round(min(wall))
    figures[f"{name}_tokens_per_s_max"] = round(max(wall))
    figures[f"{name}_tokens_per_cpu_s"] = round(float(np.median([c for _, c, _ in values])))
    if not np.isnan(values[0][2]):
      figures[f"{name}_fill"] = round(float(np.mean([f for _, _, f in values])), 3)
  figures["load_avg_1min_mean"] = round(float(np.mean(loads)), 2)
  figures.update(ratios(figures, corpora))
  return figures


def ratios(figures: Mapping[str, float], corpora: Sequence[str]) -> dict[str, float]:
  """UL2 on mixjax's packer over T5's span corruption (R1) on each packer, same row lengths:
  tokens per wall second (`..._over_r1_<packer>_<layout>`) and per CPU second (`..._cpu`)."""
  out = {}
  for corpus in corpora:
    for layout in ("encdec_512_512", "deconly_1024"):
      for unit, suffix in (("tokens_per_s", ""), ("tokens_per_cpu_s", "_cpu")):
        ul2 = figures[f"{corpus}/ul2_{layout}_mixjax_{unit}"]
        for packer in PACKERS:
          out[f"{corpus}/ul2_mixjax_over_r1_{packer}_{layout}{suffix}"] = round(
              ul2 / figures[f"{corpus}/r1_{layout}_{packer}_{unit}"], 3)
  return out


def print_table(figures: dict, corpora: Sequence[str]) -> None:
  print(f"cpus={figures['cpu_count']} rounds={figures['rounds']} "
        f"load_avg={figures['load_avg_1min_mean']}")
  for corpus in corpora:
    print(f"corpus={corpus} docs={figures[corpus + '/num_docs']}")
    print(f"{'case':<30} {'tokens/s median':>16} {'min':>11} {'max':>11} {'tokens/CPU-s':>13} "
          f"{'fill':>6}")
    for case in CASES:
      name = f"{corpus}/{case.key}"
      print(f"{case.key:<30} {figures[name + '_tokens_per_s']:>16,} "
            f"{figures[name + '_tokens_per_s_min']:>11,} "
            f"{figures[name + '_tokens_per_s_max']:>11,} "
            f"{figures[name + '_tokens_per_cpu_s']:>13,} {figures.get(name + '_fill', ''):>6}")
    for key in sorted(k for k in figures if k.startswith(f"{corpus}/ul2_mixjax_over")):
      print(f"{key}: {figures[key]}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--corpora", nargs="+", choices=sorted(CORPORA),
                      default=["synthetic", "random_words"])
  parser.add_argument("--docs", type=int, nargs="+", default=[20_000, 4000],
                      help="documents in memory (repeated), one per corpus")
  parser.add_argument("--seconds", type=float, default=4.0,
                      help="timed seconds per case and round")
  parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the cases")
  parser.add_argument("--batch_size", type=int, default=32, help="packed rows per batch")
  parser.add_argument("--json", help="write the figures here as one flat JSON object")
  args = parser.parse_args()
  if len(args.docs) != len(args.corpora):
    parser.error(f"--docs takes one count per corpus ({len(args.corpora)}).")
  figures = run(args.corpora, dict(zip(args.corpora, args.docs)), args.seconds, args.rounds,
                args.batch_size)
  print_table(figures, args.corpora)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  main()
