"""mixjax: pretraining-data-mixture research in JAX."""

__version__ = "0.1.0"
