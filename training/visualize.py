"""Pictures a person would rather look at than read: before/after panels and loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def display_range(image: np.ndarray, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(image, dtype=np.float32), [low, high])
    return float(lo), float(max(hi, lo + 1e-6))


def to_uint8(image: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    return (np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def panel(images: list[np.ndarray], ranges: list[tuple[float, float]], gap: int = 4) -> np.ndarray:
    """Images side by side as one uint8 picture, each mapped with its display range, white gaps between."""
    height = max(img.shape[0] for img in images)
    tiles = []
    for index, (image, value_range) in enumerate(zip(images, ranges)):
        tile = np.full((height, image.shape[1]), 255, np.uint8)
        tile[: image.shape[0]] = to_uint8(image, value_range)
        tiles.append(tile)
        if index < len(images) - 1:
            tiles.append(np.full((height, gap), 255, np.uint8))
    return np.concatenate(tiles, axis=1)


def loss_curve_figure(history: list[dict[str, float]]):
    """Train/val loss per epoch, and validation PSNR against training wall time (the quality-per-minute trend
    a recipe is judged by), as a matplotlib figure (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss (normalized units)", yscale="log", title="loss")
    ax_loss.legend()
    minutes = [h.get("train_minutes", h["epoch"]) for h in history]
    if history and "val_psnr" in history[0]:  # absent when the validation data have no targets
        ax_psnr.plot(minutes, [h["val_psnr"] for h in history], "o-", label="PSNR")
        ax_psnr.plot(minutes, [h["val_si_psnr"] for h in history], "o-", label="SI-PSNR")
    if history and "noisy_psnr" in history[0]:
        ax_psnr.axhline(history[0]["noisy_psnr"], color="gray", ls="--", label="noisy input PSNR")
    xlabel = "training minutes" if history and "train_minutes" in history[0] else "epoch"
    ax_psnr.set(xlabel=xlabel, ylabel="dB", title="validation")
    if ax_psnr.lines:
        ax_psnr.legend()
    fig.tight_layout()
    return fig


def loss_curve_png(path: str | Path, history: list[dict[str, float]]) -> None:
    """`loss_curve_figure` written to a PNG (the MLflow artifact loss_curve.png)."""
    import matplotlib.pyplot as plt

    fig = loss_curve_figure(history)
    fig.savefig(path, dpi=100)
    plt.close(fig)
