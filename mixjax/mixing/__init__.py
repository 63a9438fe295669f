"""Mixtures: rates and schedules, exact per-step row allocation, accounting, weight sources.

Mixture-optimisation methods (RegMix swarms, DoReMi, gradient alignment, DSIR) live here too,
each writing `DIR/weights.json` and `DIR/mixture.gin`.
"""
