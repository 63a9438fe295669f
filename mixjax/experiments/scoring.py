"""Per-token losses of a trained run's checkpoint on examples built by hand, in the run's own
row layout: the measuring instrument of the experiments that score held-out text in a format of
their choosing (documents in a context, span-corrupted inputs, a prefix and its continuation)."""

from collections.abc import Sequence

import jax
import numpy as np

from mixjax.data import features
from mixjax.inference import restore
from mixjax.models import transformer
from mixjax.training import partitioning
from mixjax.training import trainer

LAYOUTS = ("lm", "prefix_lm")


class CheckpointScorer:
  """A run's newest checkpoint on one device, scoring examples in batches of similar lengths."""

  def __init__(self, model_dir: str, batch_rows: int = 16, pad_to: int = 64):
    run = restore.restore_run(model_dir)
    self.layout = run.data_config.feature_converter
    if self.layout not in LAYOUTS:
      raise ValueError(f"{model_dir} trained a {self.layout!r} layout; the scorer reads "
                       f"decoder-only rows: feature_converter one of {LAYOUTS}.")
    self._run, self._rows, self._pad_to = run, batch_rows, pad_to
    self.vocabulary = run.data_config.vocabulary
    self.row_length = run.data_config.row_length
    model = transformer.build_model(run.model_config)
    self._losses = jax.jit(lambda params, batch: trainer.token_losses(model, params, batch)[0])

  def target_losses(self, targets: Sequence[Sequence[int]],
                    inputs: Sequence[Sequence[int]] | None = None) -> list[np.ndarray]:
    """Loss of each token of each example's `targets` (an array of its length): after its
    `inputs`, read bidirectionally, in a prefix-LM run; `inputs` must be None in an LM run (put
    a prompt at the start of the targets there)."""
    if (inputs is not None) != (self.layout == "prefix_lm"):
      raise ValueError(f"A {self.layout!r} run scores "
                       f"{'inputs and targets' if self.layout == 'prefix_lm' else 'targets only'}.")
    offsets = [len(i) for i in inputs] if inputs is not None else [0] * len(targets)
    lengths = [o + len(t) for o, t in zip(offsets, targets)]
    if max(lengths, default=0) > self.row_length:
      raise ValueError(f"An example of {max(lengths)} tokens is longer than the run's rows "
                       f"({self.row_length}); cut it first.")
    order = np.argsort(lengths, kind="stable")
    out = [None] * len(targets)
    mesh, rules = self._run.mesh, self._run.rules
    for start in range(0, len(targets), self._rows):
      chosen = order[start:start + self._rows]
      batch = features.rows(self.layout, None if inputs is None else [inputs[i] for i in chosen],
                            [targets[i] for i in chosen], self._pad_to)
      batch = {k: np.pad(v, [(0, self._rows - len(chosen))] + [(0, 0)] * (v.ndim - 1))
               for k, v in batch.items()}
      with partitioning.mesh_context(mesh, rules):
        loss_BT = np.asarray(self._losses(self._run.params, trainer.global_batch(mesh, batch)))
      for j, i in enumerate(chosen):
        out[i] = loss_BT[j, offsets[i]:lengths[i]]
    return out
