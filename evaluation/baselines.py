"""Classical denoisers to score beside the model, with their one parameter tuned on held-out images.

Gaussian filter, median filter and non-local means come from scikit-image; VST+BM3D uses the `bm3d`
package when it is installed (`pip install bm3d`, part of the `dev` extra). Each has a small grid for its
strength; `tune` picks the value with the best mean score on a few center crops of tuning images, which are
never the images being reported (see evaluation.evaluate). Grids are deliberately small: everything here
must run on a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.ndimage import uniform_filter

from evaluation.metrics import METRIC_FUNCTIONS
from training.errors import UserError


@dataclass(frozen=True)
class Baseline:
    key: str
    label: str
    param: str
    grid: tuple[float, ...]
    apply: Callable[[np.ndarray, float], np.ndarray]
    note: str = ""


@dataclass
class TunedBaseline:
    baseline: Baseline
    value: float
    scores: dict[str, float] = field(default_factory=dict)  # grid value (as text) -> mean tuning score

    @property
    def key(self) -> str:
        return self.baseline.key

    @property
    def label(self) -> str:
        return self.baseline.label

    def params(self) -> dict[str, float]:
        return {self.baseline.param: self.value}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.baseline.apply(np.asarray(image, np.float32), self.value), dtype=np.float32)


# ------------------------------------------------------------------------------------------ the filters


def gaussian_filter(image: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(image, sigma=sigma, preserve_range=True)


def median_filter(image: np.ndarray, size: float) -> np.ndarray:
    from skimage.filters import median

    return median(image, footprint=np.ones((int(size), int(size)), dtype=bool))


def nl_means(image: np.ndarray, h_factor: float) -> np.ndarray:
    """Non-local means with h = h_factor x the image's estimated noise sigma (5x5 patches, 13x13 search)."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    sigma = float(estimate_sigma(image))
    if sigma <= 0:
        return image.copy()
    return denoise_nl_means(image, h=h_factor * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)


def estimate_noise_model(image: np.ndarray, bins: int = 16) -> tuple[float, float]:
    """Fit a Poisson-Gaussian model, variance = a * intensity + b, from one noisy image.

    The noise is read from a high-pass residual (pixel minus the mean of its 4 neighbours, variance 1.25x the
    noise variance for white noise), binned by local mean; each bin's variance is a robust (MAD) estimate, so
    edges barely count. Bins in the extreme 5% of intensities are left out (clipping, saturation).
    """
    x = np.asarray(image, dtype=np.float64)
    padded = np.pad(x, 1, mode="reflect")
    residual = x - 0.25 * (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:])
    local_mean = uniform_filter(x, 5)
    low, high = np.percentile(local_mean, [5, 95])
    edges = np.linspace(low, high, bins + 1)
    means, variances, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (local_mean >= lo) & (local_mean < hi)
        if inside.sum() < 200:
            continue
        r = residual[inside]
        mad = np.median(np.abs(r - np.median(r)))
        means.append(local_mean[inside].mean())
        variances.append((1.4826 * mad) ** 2 / 1.25)
        counts.append(inside.sum())
    if len(means) < 2:
        return 0.0, float(np.var(residual) / 1.25)
    a, b = np.polyfit(means, variances, 1, w=np.sqrt(counts))
    return float(a), float(b)


class GeneralizedAnscombe:
    """Variance-stabilizing transform for variance = a * x + b (noise std ~1 afterwards), and its inverse.

    Falls back to plain scaling (Gaussian noise) when the signal-dependent part is negligible.
    """

    def __init__(self, a: float, b: float, image: np.ndarray):
        floor = 1e-3 * max(float(np.var(image)), 1e-12) / max(float(np.abs(image).mean()), 1e-12)
        self.poisson = a > floor
        self.a, self.b = a, b
        if not self.poisson:
            self.sigma = math.sqrt(max(b, 1e-12))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.poisson:
            return x / self.sigma
        a = self.a
        return (2.0 / a) * np.sqrt(np.maximum(a * x + 0.375 * a * a + self.b, 0.0))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Algebraic inverse with the asymptotic bias correction (3/8 -> 1/8)."""
        if not self.poisson:
            return z * self.sigma
        a = self.a
        return ((a * z / 2.0) ** 2 - 0.125 * a * a - self.b) / a


def vst_bm3d(image: np.ndarray, strength: float) -> np.ndarray:
    """Generalized Anscombe transform (noise model fitted on the image), BM3D with sigma = strength x the noise
    sigma estimated in the stabilized domain, then the inverse transform."""
    import bm3d
    from skimage.restoration import estimate_sigma

    x = np.asarray(image, dtype=np.float64)
    vst = GeneralizedAnscombe(*estimate_noise_model(x), x)
    z = vst.forward(x)
    sigma = float(estimate_sigma(z))
    if sigma <= 0:
        return x.astype(np.float32)
    return vst.inverse(bm3d.bm3d(z, sigma_psd=strength * sigma)).astype(np.float32)


def bm3d_available() -> bool:
    return importlib.util.find_spec("bm3d") is not None


BASELINES: dict[str, Baseline] = {
    "gaussian": Baseline("gaussian", "Gaussian filter", "sigma", (0.5, 1.0, 1.5, 2.0, 3.0), gaussian_filter),
    "median": Baseline("median", "median filter", "size", (3, 5, 7), median_filter),
    "nlm": Baseline("nlm", "non-local means", "h_factor", (0.8, 1.2, 1.6, 2.0), nl_means,
                    "h = h_factor x estimated noise sigma"),
    "bm3d": Baseline("bm3d", "VST+BM3D", "strength", (1.0, 1.25, 1.5), vst_bm3d,
                     "generalized Anscombe; BM3D sigma = strength x sigma estimated after the VST"),
}


def select_baselines(spec: str) -> list[Baseline]:
    """'all' (BM3D only when the package is installed), 'none', or a comma list such as 'gaussian,nlm'."""
    spec = (spec or "").strip().lower()
    if spec in ("", "none"):
        return []
    if spec == "all":
        return [b for k, b in BASELINES.items() if k != "bm3d" or bm3d_available()]
    chosen = []
    for key in (k.strip() for k in spec.split(",") if k.strip()):
        if key not in BASELINES:
            raise UserError(f"unknown baseline '{key}': expected all, none or a comma list of {', '.join(BASELINES)}")
        if key == "bm3d" and not bm3d_available():
            raise UserError("baseline 'bm3d' needs the bm3d package: pip install bm3d")
        chosen.append(BASELINES[key])
    return chosen


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[top:top + size, left:left + size]


def tune(baseline: Baseline, pairs: list[tuple[np.ndarray, np.ndarray]], metric: str = "si_psnr",
         crop: int = 192) -> TunedBaseline:
    """Pick the grid value with the best mean `metric` over center crops of (noisy, clean) tuning pairs."""
    if not pairs:
        raise UserError(f"no images to tune baseline '{baseline.key}' on")
    crops = [(center_crop(np.asarray(n, np.float32), crop), center_crop(np.asarray(c, np.float32), crop))
             for n, c in pairs]
    if metric not in METRIC_FUNCTIONS:
        raise UserError(f"unknown tuning metric '{metric}': expected {', '.join(METRIC_FUNCTIONS)}")
    score_fn = METRIC_FUNCTIONS[metric]
    scores: dict[str, float] = {}
    best_value, best_score = baseline.grid[0], -math.inf
    for value in baseline.grid:
        values = [score_fn(clean, baseline.apply(noisy, value)) for noisy, clean in crops]
        score = float(np.nanmean(values))
        scores[f"{value:g}"] = score
        if score > best_score:
            best_value, best_score = value, score
    return TunedBaseline(baseline, best_value, scores)


__all__ = ["BASELINES", "Baseline", "GeneralizedAnscombe", "TunedBaseline", "bm3d_available", "center_crop",
           "estimate_noise_model", "select_baselines", "tune", "vst_bm3d"]
