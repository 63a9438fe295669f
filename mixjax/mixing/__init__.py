"""Mixtures: rates and schedules, exact per-step row allocation, accounting, weight sources.

The iterator side (schedules, allocation, accounting, sources, stream) imports only `data`.
Mixture-optimisation methods live here too and may train proxies (`models`, `training`):
swarm.py (K proxies in one jit), regmix/ (RegMix and its binary), doremi.py, alignment.py,
dsir.py, with target.py (what `MIXING_TARGET` names) and output.py (the `DIR/weights.json` +
`DIR/mixture.gin` contract every method writes).
"""
