"""Evaluation stage: score models, classical baselines and other tools' saved outputs on held-out W2S data."""
