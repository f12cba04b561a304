"""Per-image metrics of the AI4Life-MDC24 challenge: PSNR, SSIM, SI-PSNR and MS-SSIM.

PSNR, SSIM and SI-PSNR are the training stage's (training/metrics.py): scikit-image with the data range of
the target (max - min), and CAREamics' `scale_invariant_psnr`. MS-SSIM is torchmetrics'
`multiscale_structural_similarity_index_measure`, the implementation CAREamics (the challenge organizers'
library) calls, with its defaults (Gaussian window 11 / sigma 1.5, the five Wang et al. weights) and the
same data range.
"""

from __future__ import annotations

import math

import numpy as np

from training.metrics import psnr, scale_invariant_psnr, ssim

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11
METRICS = ("psnr", "si_psnr", "ssim", "ms_ssim")
METRIC_LABELS = {"psnr": "PSNR (dB)", "si_psnr": "SI-PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM"}


def ms_ssim_scales(shape: tuple[int, ...]) -> int:
    """How many of the five scales an image of `shape` supports under torchmetrics' size rule (0 = none).

    Five scales need both sides >= 176 pixels. Smaller images use the first n scales that fit, with the
    weights renormalized to sum to 1, so the value stays in [0, 1] (documented deviation for tiny images).
    """
    side = min(shape[-2:])
    for n in range(len(MS_SSIM_BETAS), 0, -1):
        if side >= 2**n and side // max(1, n - 1) ** 2 > MS_SSIM_KERNEL - 1:
            return n
    return 0


def ms_ssim(target: np.ndarray, prediction: np.ndarray) -> float:
    """Multi-scale SSIM of a 2-D prediction against its target, data range = target max - min."""
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    _check_shapes(target, prediction)
    scales = ms_ssim_scales(target.shape)
    if scales == 0:
        return math.nan
    betas = MS_SSIM_BETAS if scales == len(MS_SSIM_BETAS) else tuple(
        b / sum(MS_SSIM_BETAS[:scales]) for b in MS_SSIM_BETAS[:scales])
    data_range = float(target.max() - target.min())
    if data_range == 0:
        return math.nan
    # float32 as CAREamics feeds it (torch.Tensor): 10x faster than float64 on CPU, agrees to ~1e-6
    value = multiscale_structural_similarity_index_measure(
        torch.from_numpy(prediction.astype(np.float32))[None, None], torch.from_numpy(target.astype(np.float32))[None, None],
        data_range=data_range,
        kernel_size=MS_SSIM_KERNEL, betas=betas)
    return float(value)


def score_image(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """All four metrics of one 2-D prediction against its target."""
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    _check_shapes(target, prediction)
    return {"psnr": psnr(target, prediction), "si_psnr": scale_invariant_psnr(target, prediction),
            "ssim": ssim(target, prediction), "ms_ssim": ms_ssim(target, prediction)}


METRIC_FUNCTIONS = {"psnr": psnr, "si_psnr": scale_invariant_psnr, "ssim": ssim, "ms_ssim": ms_ssim}


def _check_shapes(target: np.ndarray, prediction: np.ndarray) -> None:
    if target.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} does not match target shape {target.shape}")
    if target.ndim != 2:
        raise ValueError(f"expected 2-D images, got shape {target.shape}")


__all__ = ["METRICS", "METRIC_FUNCTIONS", "METRIC_LABELS", "ms_ssim", "ms_ssim_scales", "psnr", "scale_invariant_psnr", "score_image",
           "ssim"]
