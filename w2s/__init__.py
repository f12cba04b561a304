"""The `w2s` command: one click group joining the pipeline stages (training, evaluation, submission)."""
