"""Compatibility with public checkpoints: Hugging Face model import/export and tokenizers
(continued pre-training). The continued-pre-training issue fills this package."""
