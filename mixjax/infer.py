"""Inference binary: continue text or fill in `<X>` spans with a trained run's model.

  python -m mixjax.infer --model_dir=/tmp/mixjax_ul2 --mode=S2S --prompt="Q: 12 + 30 ="
  python -m mixjax.infer --model_dir=/tmp/mixjax_ul2 --mode=NLU \
      --prompt="Libo Vend is a <X> living in Bergen."

Modes: S2S (continue), NLU / NLG (span infilling, UL2's mode tokens), none (plain LM). UL2-trained
prefix-LM runs see the prompt bidirectionally, as in training.
"""

import argparse

from mixjax.inference import decoding
from mixjax.models import transformer
from mixjax.training import checkpoints


def infer(model_dir: str, prompts: list[str], mode: str = "S2S", max_new_tokens: int = 64,
          temperature: float = 0.0, seed: int = 0) -> list[str]:
  """Generates one completion per prompt; returns them as text."""
  model_config, data_config, params = checkpoints.restore_for_inference(model_dir)
  if model_config.architecture != "decoder":
    raise NotImplementedError("mixjax.infer generates with decoder-only models; this run is "
                              f"{model_config.architecture!r}.")
  ul2 = data_config.objective == "ul2"
  if ul2 and mode == "none":
    raise ValueError("This run was trained with UL2: pick a mode (S2S, NLU or NLG).")
  model = transformer.build_model(model_config)
  outputs = []
  for i, prompt in enumerate(prompts):
    ids = decoding.encode_prompt(prompt, mode if ul2 else "none")
    if ul2:
      ids.append(1)  # UL2 inputs end with EOS, as in training
    new = decoding.generate(model.apply, params, ids, max_new_tokens=max_new_tokens,
                            prefix_lm=data_config.feature_converter == "prefix_lm",
                            temperature=temperature, seed=seed + i)
    outputs.append(decoding.decode_tokens(new))
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
