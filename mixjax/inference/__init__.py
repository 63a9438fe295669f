"""Inference: restoring a run's model, prompt formats, generation (KV cache, decode loop and
sampling through the kernels belong here)."""
