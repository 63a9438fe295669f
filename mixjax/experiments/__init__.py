"""The experiment harness: arms, branching from a checkpoint, paired summaries over seeds and
markdown tables, shared by every driver in benchmarks/."""
