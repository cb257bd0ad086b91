"""In-process runs of the trainer (`train()`, `evaluate()`, `predict()` in this process), named by what they prove:
training, self-play iterations, resume, a run's identity, schedules, scoring, evaluation, the preflight."""
