"""The embedded synthetic corpus (the testbed): seeded text domains with held-out probes.

`python -m mixjax.testbed --out DIR --docs N` writes it as JSONL; `mixjax_tasks` registers it as
SeqIO tasks. Depends on nothing in mixjax but the standard library and tqdm.
"""
