"""Fresh noise realizations for a training target, from a noise model fitted to its own noisy/clean pair.

W2S has one noisy frame per target, so a network sees the same noise on every pass over the data. Each
pair's noise is fitted once and new inputs are drawn from the clean target. The residual of the noisy
frame about an affine map of the target is white, its variance is linear in the mean (shot noise), and
at W2S's few photons per pixel (median 8 to 25 from the 25th to the 90th intensity percentile) its skew is
~1.5x that of Poisson noise of the same variance: the signature of an EMCCD's gain register, which
multiplies each photon's charge by an exponentially distributed gain (`python -m benchmarks.noise_model`
measures both). So a pixel is drawn as `zero + theta * Gamma(Poisson(lam))` (a sum of
Poisson-many exponentials) with the fitted mean and variance, then rounded and clipped to the frame's
range like the real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.normalization import input_frame_fit

MIN_PIXELS_PER_BIN = 200
EXCESS_NOISE = 2.0  # variance / (gain * mean) of EMCCD gain: the exponential multiplication doubles it


@dataclass(frozen=True)
class NoiseModel:
    """noisy ~ zero + theta * Gamma(Poisson((mean - zero) / theta)), mean = slope * clean + intercept."""

    slope: float
    intercept: float
    gain: float  # d variance / d mean of the noisy frame
    zero: float  # the mean at which the shot-noise variance would vanish
    low: float  # the noisy frame's range, for clipping like the camera/export did
    high: float
    integer: bool  # the noisy frame holds whole numbers: round the draw

    def sample(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = self.slope * np.asarray(clean, dtype=np.float64) + self.intercept
        theta = self.gain / EXCESS_NOISE
        photons = rng.poisson(np.clip((mean - self.zero) / theta, 0.0, None))
        charge = rng.gamma(np.maximum(photons, 1), theta) * (photons > 0)
        noisy = self.zero + charge
        if self.integer:
            noisy = np.round(noisy)
        return np.clip(noisy, self.low, self.high).astype(np.float32)


def fit_noise_model(noisy: np.ndarray, clean: np.ndarray) -> NoiseModel | None:
    """The pair's noise model, or None when the pair shows no usable signal-dependent noise (a blank or
    flat target, or a variance that does not grow with the mean)."""
    noisy = np.asarray(noisy, dtype=np.float64)
    clean = np.asarray(clean, dtype=np.float64)
    if noisy.shape != clean.shape:
        raise ValueError(f"noise model: noisy {noisy.shape} and clean {clean.shape} differ in shape")
    low, high = float(noisy.min()), float(noisy.max())
    unsaturated = clean < clean.max()  # chosen by the target, not the frame: that would bias the fit
    x, y = clean[unsaturated], noisy[unsaturated]
    if x.size > 1 << 22:  # a 2048^2 subsample fits the same lines
        x, y = x[:: x.size // (1 << 22) + 1], y[:: y.size // (1 << 22) + 1]
    if x.size < 4 * MIN_PIXELS_PER_BIN or np.ptp(x) <= 0 or np.ptp(y) <= 0:
        return None
    slope, intercept = input_frame_fit(y, x)
    if slope <= 0:
        return None
    mean = slope * x + intercept
    residual = y - mean
    edges = np.unique(np.quantile(mean, np.linspace(0.0, 0.95, 33)))
    index = np.digitize(mean, edges[1:-1])
    means, variances = [], []
    for b in range(len(edges) - 1):
        in_bin = index == b
        if in_bin.sum() >= MIN_PIXELS_PER_BIN:
            means.append(mean[in_bin].mean())
            variances.append(residual[in_bin].var())
    if len(means) < 3:
        return None
    gain, offset = np.polyfit(means, variances, 1)
    if gain <= 0:
        return None
    integer = bool(np.all(noisy == np.round(noisy)))
    return NoiseModel(float(slope), float(intercept), float(gain), float(-offset / gain), low, high, integer)
