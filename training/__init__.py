"""Training stage: W2S data on disk -> normalized patches -> a trained U-Net checkpoint tracked in MLflow."""
