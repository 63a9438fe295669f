"""In-Context Pretraining: reorder a corpus so related documents share training contexts.

Stages (embed -> index -> knn -> order -> write) in stages.py, each resumable; `python -m
mixjax.iclm` is the CLI; task.py registers the SeqIO task over an output directory.
"""
