"""What an objective is: preprocessors after tokenization, output features, the layouts (feature
converter -> architecture) it trains, and its prompt format."""

import abc
import dataclasses
from typing import Mapping, Sequence

import seqio

ARCHITECTURES = ("decoder", "encoder_decoder")


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A prompt in an objective's format: `inputs` (None for plain LM) and the causal `prefix`
  of the targets that a continuation follows."""
  inputs: tuple[int, ...] | None
  prefix: tuple[int, ...] = ()


class Objective(abc.ABC):
  """A training objective (registered by name in `mixjax.data.objectives`)."""

  name: str
  # feature converter -> the architecture that trains on its batches
  layouts: Mapping[str, str]

  @abc.abstractmethod
  def output_features(self, vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """The SeqIO output features of this objective's tasks."""

  @abc.abstractmethod
  def preprocessors(self, layout: str, long_documents: str) -> list:
    """Preprocessors that follow tokenization (the tokens are in `targets`)."""

  @abc.abstractmethod
  def prompt(self, prompt_ids: Sequence[int], vocabulary: seqio.Vocabulary,
             mode: str | None = None) -> Prompt:
    """`prompt_ids` (a tokenized prompt) in this objective's format."""

  def variant_tag(self, layout: str) -> str:
    """Suffix of the SeqIO task name this objective derives from a task ('' for none)."""
    return f"{self.name}_{layout}"

  def check(self, layout: str, architecture: str | None = None):
    """Raises, naming the valid combinations, if this objective cannot train `layout` on
    `architecture`."""
    if layout not in self.layouts or (architecture and self.layouts[layout] != architecture):
      valid = ", ".join(f"feature_converter={c!r} with architecture={a!r}"
                        for c, a in self.layouts.items())
      raise ValueError(f"objective={self.name!r} cannot train feature_converter={layout!r}"
                       f"{f' with architecture={architecture!r}' if architecture else ''}; "
                       f"valid: {valid}.")
