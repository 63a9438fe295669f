"""Inference binary: continue text or fill in `<X>` spans with a trained run's model.

  python -m mixjax.infer --model_dir=/tmp/mixjax_ul2 --mode=S2S --prompt="Q: 12 + 30 ="
  python -m mixjax.infer --model_dir=/tmp/mixjax_ul2 --mode=NLU \
      --prompt="Libo Vend is a <X> living in Bergen."

Modes: S2S (continue), NLU / NLG (span infilling, UL2's mode tokens), none (plain LM). UL2-trained
prefix-LM runs see the prompt bidirectionally, as in training.
"""

import argparse

from mixjax.data import objectives
from mixjax.inference import decoding
from mixjax.inference import restore
from mixjax.models import transformer


def infer(model_dir: str, prompts: list[str], mode: str = "S2S", max_new_tokens: int = 64,
          temperature: float = 0.0, seed: int = 0) -> list[str]:
  """Generates one completion per prompt; returns them as text.

  Prompts are put in the run's objective's prompt format (the one its probes were scored in):
  an lm run continues the text; a UL2 run gets the mode token, the prompt and EOS as inputs,
  seen bidirectionally by a prefix-LM model, as in training.
  """
  model_config, data_config, params = restore.restore_for_inference(model_dir)
  if model_config.architecture != "decoder":
    raise NotImplementedError("mixjax.infer generates with decoder-only models; this run is "
                              f"{model_config.architecture!r}.")
  ul2 = data_config.objective == "ul2"
  if ul2 and mode == "none":
    raise ValueError("This run was trained with UL2: pick a mode (S2S, NLU or NLG).")
  objective = objectives.get(data_config.objective)
  vocabulary = data_config.vocabulary
  model = transformer.build_model(model_config)
  outputs = []
  for i, prompt in enumerate(prompts):
    formatted = objective.prompt(decoding.encode_prompt(prompt, "none", vocabulary), vocabulary,
                                 mode if ul2 else None)
    ids = list(formatted.inputs or ()) + list(formatted.prefix)
    new = decoding.generate(model.apply, params, ids, max_new_tokens=max_new_tokens,
                            prefix_lm=data_config.feature_converter == "prefix_lm",
                            temperature=temperature, seed=seed + i, eos_id=vocabulary.eos_id)
    outputs.append(decoding.decode_tokens(new, vocabulary))
  return outputs


def main(argv=None):
  parser = argparse.ArgumentParser(prog="mixjax.infer", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--prompt", action="append", required=True, help="repeatable")
  parser.add_argument("--mode", default="S2S", choices=sorted(decoding.MODES))
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  for prompt, out in zip(args.prompt, infer(args.model_dir, args.prompt, args.mode,
                                            args.max_new_tokens, args.temperature, args.seed)):
    print(f"{prompt!r} -> {out!r}")


if __name__ == "__main__":
  main()
