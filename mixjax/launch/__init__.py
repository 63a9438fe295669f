"""Launching: jax.distributed initialisation (flags, TPU VM and SLURM detection), host-0 writers,
TPU VM and SLURM helpers. The multi-host issue fills this package."""
