"""UL2 variants of any registered LM task or mixture (`gin/ul2.gin`).

`ul2_variant('mixjax_synthetic_mix', 'prefix_lm')` registers `mixjax_synthetic_mix_ul2_prefix_lm`:
the same sources and rates, each document routed through `denoisers.ul2_denoise`. Two layouts:

* `prefix_lm` (decoder-only): inputs and targets share one packed row whose length is the sum
  of TASK_FEATURE_LENGTHS' `inputs` and `targets` (seqio's PrefixLMFeatureConverter rule), so the
  denoisers budget that sum;
* `enc_dec`: inputs <= the `inputs` length, targets <= the `targets` length.
"""


import seqio

from mixjax.data.objectives import denoisers
from mixjax.data import tasks as lm_tasks
from mixjax import vocab as vocab_lib

LAYOUTS = ("prefix_lm", "enc_dec")


def _denoise_prefix_lm(dataset, sequence_length, output_features):
  """ul2_denoise with the decoder-only budget: inputs + targets share the summed length."""
  total = {"targets": sum(sequence_length.values())}
  return denoisers.ul2_denoise(dataset, total, output_features)


def _output_features() -> dict[str, seqio.Feature]:
  vocab = vocab_lib.get_vocabulary()
  return {"inputs": seqio.Feature(vocab, add_eos=True),
          "targets": seqio.Feature(vocab, add_eos=True)}


def _register_task(task_name: str, layout: str) -> str:
  if task_name not in lm_tasks.TASK_TEXT_SOURCES:
    raise ValueError(f"Task {task_name!r} was not registered through "
                     "mixjax.data.tasks.register_lm_task, so its text source is unknown and "
                     "no UL2 variant can be derived; register it with register_lm_task.")
  source, text_key = lm_tasks.TASK_TEXT_SOURCES[task_name]
  name = f"{task_name}_ul2_{layout}"
  denoise = _denoise_prefix_lm if layout == "prefix_lm" else denoisers.ul2_denoise
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source, output_features=_output_features(),
      preprocessors=lm_tasks.tokenize_preprocessors(text_key) + [
          denoise, seqio.preprocessors.append_eos_after_trim])
  lm_tasks.TASK_DOMAINS[name] = lm_tasks.domain_of(task_name)
  if task_name in lm_tasks.TASK_PROBES:
    lm_tasks.TASK_PROBES[name] = lm_tasks.TASK_PROBES[task_name]
  return name


def ul2_variant(mixture_or_task_name: str, layout: str) -> str:
  """Registers (idempotently) the UL2 variant of a task or mixture; returns its name."""
  if layout not in LAYOUTS:
    raise ValueError(f"Unknown UL2 layout {layout!r}; valid: {', '.join(LAYOUTS)}.")
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  if not isinstance(provider, seqio.Mixture):
    return _register_task(mixture_or_task_name, layout)
  name = f"{mixture_or_task_name}_ul2_{layout}"
  rates = [(_register_task(task.name, layout), provider.get_rate(task))
           for task in provider.tasks]
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, rates)
  return name
