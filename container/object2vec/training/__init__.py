"""Training: the job, the epoch loop, metrics and signals."""
