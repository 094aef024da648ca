"""Running inversions from Hydra configs: the schemas and their checks, composing, the entry points,
the runner, resuming, what a run writes, and experiment tracking."""
