"""The embedded synthetic corpus (the testbed): seeded text domains with held-out probes.

`python -m mixjax.testbed --out DIR --docs N` writes it as JSONL; `mixjax_tasks` registers it as
SeqIO tasks. corpus.py is the entry point (config, documents, probes, files); each domain is one
module (web, bios, math, code, prose) registered by name in registry.py, listed in domains.py;
draws.py, keys.py, text.py and world.py are what the domains share. Depends on nothing in mixjax
but the standard library and tqdm.
"""
