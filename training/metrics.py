"""Per-image quality metrics used for validation during training (the evaluation stage builds on these).

Conventions follow the AI4Life-MDC24 challenge: the data range is taken from the ground truth
(max - min), and SI-PSNR is CAREamics' `scale_invariant_psnr`.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(target: np.ndarray, prediction: np.ndarray) -> float:
    target, prediction = _as_float(target), _as_float(prediction)
    return float(peak_signal_noise_ratio(target, prediction, data_range=float(target.max() - target.min())))


def ssim(target: np.ndarray, prediction: np.ndarray) -> float:
    target, prediction = _as_float(target), _as_float(prediction)
    return float(structural_similarity(target, prediction, data_range=float(target.max() - target.min())))


def scale_invariant_psnr(target: np.ndarray, prediction: np.ndarray) -> float:
    """PSNR after the least-squares affine fit of the prediction to the target (CAREamics' definition).

    Both are made zero-mean, the target is scaled to unit standard deviation, the prediction is scaled by
    the least-squares factor onto it, and PSNR uses the range (max - min) / std of the target.
    """
    target, prediction = _as_float(target), _as_float(prediction)
    std = target.std()
    target_n = (target - target.mean()) / std
    prediction_c = prediction - prediction.mean()
    denominator = float(np.sum(prediction_c * prediction_c))
    scale = float(np.sum(target_n * prediction_c)) / denominator if denominator > 0 else 0.0
    mse = float(np.mean((target_n - scale * prediction_c) ** 2))
    data_range = float(target.max() - target.min()) / std
    if mse == 0:
        return float("inf")  # an exact affine copy of the target (CAREamics returns ~332 dB from rounding)
    return float(20 * np.log10(data_range) - 10 * np.log10(mse))


def _as_float(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)
