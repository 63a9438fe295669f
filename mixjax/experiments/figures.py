"""Figures of an experiment's flat summary (`summary.summarise`): what a table shows less well."""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import figure as mpl_figure

from mixjax.experiments import context_loss


def position_gains(flat: Mapping[str, float], arms: Sequence[str], orders: Sequence[str],
                   path: str) -> None:
  """One panel per held-out order: each arm's `ctx/<order>/<position>/gain` (alone − in
  context; below zero, earlier documents made it dearer), mean ± std over seeds, as bars."""
  fig = mpl_figure.Figure(figsize=(4.2 * len(orders), 3.4), layout="constrained")
  axes = fig.subplots(1, len(orders), sharey=True, squeeze=False)[0]
  x = np.arange(len(context_loss.POSITIONS))
  width = 0.8 / len(arms)
  for ax, order in zip(axes, orders):
    for k, arm in enumerate(arms):
      names = [f"ctx/{order}/{p}/gain" for p in context_loss.POSITIONS]
      mean = [flat.get(f"mean/{arm}/{n}", np.nan) for n in names]
      std = [flat.get(f"std/{arm}/{n}", 0.0) for n in names]
      ax.bar(x + (k - (len(arms) - 1) / 2) * width, mean, width, yerr=std, capsize=3,
             label=f"trained on {arm} order")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, ["1st", "2nd", "3rd+"])
    ax.set_xlabel("position of the document in its context")
    ax.set_title(f"held-out contexts in {order} order")
  axes[0].set_ylabel("loss alone − in context (nats/byte)")
  axes[0].legend(fontsize=8)
  fig.savefig(path, dpi=120)
