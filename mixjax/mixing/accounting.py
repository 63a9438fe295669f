"""Per-domain accounting: domain sizes, the repeats a schedule implies, and a cap on them.

A domain's size is one epoch of its train split, tokenised and packed into rows of the run's
length, counted once per run (and kept in the data iterator's checkpointed state). Counting
stops after `max_rows` rows; the size is then a lower bound, and epochs derived from it upper
bounds. Repeating a small domain many times is the failure mode users of weighted blends report;
`check_repeats` catches it before training starts.
"""

from typing import Mapping

from absl import logging
import numpy as np

from mixjax.mixing import schedules as mixtures
from mixjax.data import pipeline

ON_EXCEED = ("error", "warn")


class RepeatCapError(ValueError):
  """A schedule would repeat a domain more often than the configured cap allows."""


_SIZES: dict[tuple, mixtures.DomainSize] = {}  # counting takes seconds; once per process


def count_domain_size(task_name: str, config: pipeline.DataConfig,
                      max_rows: int) -> mixtures.DomainSize:
  """Rows and target tokens in one packed epoch of `task_name`'s train split (cached)."""
  key = (task_name, config.objective, config.vocab,
         tuple(sorted(config.task_feature_lengths.items())), config.feature_converter,
         config.pack, max_rows)
  if key not in _SIZES:
    ds = pipeline.get_dataset(config, task_name, "train", shuffle=False, num_epochs=1)
    rows = tokens = 0
    for batch in ds.batch(1024).as_numpy_iterator():
      targets = batch["decoder_target_tokens"]
      rows, tokens = rows + targets.shape[0], tokens + int(np.count_nonzero(targets))
      if rows >= max_rows:
        break
    if rows == 0:
      raise ValueError(f"Task {task_name!r} has no train rows; it cannot be mixed in.")
    _SIZES[key] = mixtures.DomainSize(rows, tokens, complete=rows < max_rows)
  return _SIZES[key]


def check_repeats(schedule: mixtures.ResolvedSchedule, ctx: mixtures.MixtureContext,
                  sizes: Mapping[str, mixtures.DomainSize], rows_D: np.ndarray,
                  max_epochs: float | Mapping[str, float] | None, on_exceed: str = "error"):
  """Raises (or warns) naming each domain the schedule repeats more than `max_epochs` times."""
  if on_exceed not in ON_EXCEED:
    raise ValueError(f"on_exceed must be one of {ON_EXCEED}, got {on_exceed!r}.")
  if max_epochs is None:
    return
  if isinstance(max_epochs, Mapping):
    cap_D = mixtures.domain_vector(max_epochs, ctx, "max_epochs", fill=np.inf)
  else:
    cap_D = np.full(len(ctx.domains), float(max_epochs))
  problems, unsure = [], []
  for d, domain in enumerate(ctx.domains):
    epochs = rows_D[d] / sizes[domain].rows
    if epochs > cap_D[d]:
      line = (f"{domain!r}: {epochs:.2f} epochs ({rows_D[d]} rows scheduled over "
              f"{ctx.total_steps} steps, {sizes[domain].rows} rows per epoch) > cap {cap_D[d]:g}")
      (problems if sizes[domain].complete else unsure).append(line)
  if unsure:
    logging.warning("Domain sizes were only partly counted; the schedule may exceed the repeat "
                    "cap for %s", "; ".join(unsure))
  if problems:
    message = (f"The mixture schedule repeats domains more than MixingConfig.max_epochs allows: "
               f"{'; '.join(problems)}. Lower those domains' rates or the number of steps, "
               f"raise MixingConfig.max_epochs, or derive rates with "
               f"unimax_rates(max_epochs=...), which respects the cap.\nSchedule:\n"
               f"{schedule.describe()}")
    if on_exceed == "error":
      raise RepeatCapError(message)
    logging.warning("%s", message)
