"""What UL2's own prompt format changes in a UL2 run's probe scores.

Scores every probe of a trained UL2 prefix-LM run twice with the same parameters: in the run's
prompt format (the [S2S] mode token, the prompt and EOS as bidirectional inputs, the candidate as
targets: what training's S denoiser saw and what `mixjax.infer` gives the model) and in the
format used before mixjax had one prompt format per objective (prompt and candidate in one causal
row, no mode token, no EOS).

  python -m mixjax.train --gin_file=gin/quickstart.gin --gin_file=gin/ul2.gin \
      --gin.MODEL_DIR="'/tmp/mixjax_ul2'"
  python benchmarks/ul2_probe_format.py --model_dir=/tmp/mixjax_ul2 --json OUT.json
"""

import argparse
import dataclasses
import json

import mixjax_tasks  # noqa: F401  (registers the synthetic tasks)
from mixjax.eval import evaluator
from mixjax.inference import restore
from mixjax.models import transformer
from mixjax.training import partitioning


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--max_probes", type=int, default=100)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  model_config, data, params = restore.restore_for_inference(args.model_dir)
  if data.objective != "ul2" or data.feature_converter != "prefix_lm":
    raise SystemExit(f"{args.model_dir} is not a UL2 prefix-LM run ({data.objective}, "
                     f"{data.feature_converter}).")
  mesh = partitioning.make_mesh(partitioning.MeshConfig(shape=(1, 1, 1), num_devices=1))
  model = transformer.build_model(model_config)
  config = evaluator.EvalConfig(num_batches=1, batch_size=32, max_probes=args.max_probes)
  causal = dataclasses.replace(data, objective="lm", feature_converter="lm",
                               task_feature_lengths={"targets": data.row_length})
  results = {}
  for name, fmt in (("ul2_format", data), ("causal_no_mode", causal)):
    metrics = evaluator.Evaluator(model, mesh, partitioning.DEFAULT_RULES, fmt,
                                  config).evaluate(params)
    results.update({f"{name}/{k}": float(v) for k, v in metrics.items() if k.startswith("probe/")})
  print(json.dumps(results, indent=1, sort_keys=True))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1, sort_keys=True)
  return results


if __name__ == "__main__":
  main()
