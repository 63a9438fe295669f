"""Evaluation: per-domain validation loss and probe scoring, shared by training-time evaluation
and the `python -m mixjax.eval` binary."""
