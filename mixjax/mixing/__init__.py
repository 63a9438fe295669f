"""Mixtures: rates and schedules, exact per-step row allocation, accounting, weight sources.

The iterator side (schedules, allocation, accounting, sources, stream) imports only `data`.
Mixture-optimisation methods live here too and may train proxies (`models`, `training`; DoReMi
restores a reference run via `inference`): swarm.py (K proxies in one jit), proxies.py (what the
proxy methods share), regmix/, doremi/ and alignment/ (each with its binary, entry binary.py),
dsir.py, with target.py (what `MIXING_TARGET` names) and output.py (the `DIR/weights.json` +
`DIR/mixture.gin` contract every method writes).
"""
