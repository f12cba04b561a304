"""Map images to a common scale before the network and back after it.

Inputs arrive on very different scales (stretched 8-bit PNGs, raw uint16 counts, the challenge's int16
stacks), so the default is per-image percentile normalization: (x - p_low) / (p_high - p_low). The
original project's dataset z-score is kept as `meanstd`. Whatever is used travels in the checkpoint and is
inverted after prediction with the *input's* statistics, so outputs come back in the input's units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-6


@dataclass
class Normalization:
    method: str = "percentile"
    low: float = 1.0  # percentiles, for "percentile"
    high: float = 99.8
    mean: float = 0.0  # dataset statistics, for "meanstd"
    std: float = 1.0
    target: str = "input"  # how training targets are scaled: "input", "own" or "fit" (see target_stats)
    gain: float = 1.0  # "fit": the training set's mean affine map from the input's frame to the targets' own
    bias: float = 0.0

    def target_stats(self, noisy: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
        """Statistics that bring a training target to the network's output scale.

        "input": the input's own (offset, scale), right when input and target share physical units (raw
        counts, the z-scored release, the challenge): the network then learns the true intensity mapping.
        "own": the target's statistics, for data whose images were contrast-stretched one by one (the 8-bit
        release), where the input's units say nothing about the target's.
        "fit": the target mapped into the input's frame by a least-squares fit of the normalized input on
        the target (unbiased: the noise is in the input), then by one dataset-wide affine map (`gain`,
        `bias`) towards the targets' own scale. On stretched data "own" asks the network for a per-image
        scale it cannot see (on W2S 8-bit the input/target slope varies 0.3..1.0); "fit" removes that
        label noise while keeping outputs on the targets' typical scale.
        """
        if self.target == "own":
            return self.stats(clean)
        if self.target != "fit":
            return self.stats(noisy)
        slope, intercept = input_frame_fit(self.normalize(noisy), to_input_grid(clean, noisy.shape))
        if slope <= EPS:  # no positive relation to fit (a blank target): fall back to the target's own scale
            return self.stats(clean)
        scale = 1.0 / (self.gain * slope)
        return -(self.gain * intercept + self.bias) * scale, scale

    def stats(self, image: np.ndarray) -> tuple[float, float]:
        """(offset, scale) such that (image - offset) / scale is the normalized image."""
        if self.method == "meanstd":
            return self.mean, max(self.std, EPS)
        sample = np.asarray(image, dtype=np.float32)
        if sample.size > 1 << 22:  # percentiles of a 2048^2 subsample are indistinguishable and 10x faster
            sample = sample.reshape(-1)[:: sample.size // (1 << 22) + 1]
        lo, hi = np.percentile(sample, [self.low, self.high])
        return float(lo), float(max(hi - lo, EPS * max(1.0, abs(float(lo)))))

    def normalize(self, image: np.ndarray, stats: tuple[float, float] | None = None) -> np.ndarray:
        offset, scale = stats if stats is not None else self.stats(image)
        return (np.asarray(image, dtype=np.float32) - np.float32(offset)) / np.float32(scale)

    @staticmethod
    def denormalize(image: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
        offset, scale = stats
        return image * np.float32(scale) + np.float32(offset)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        return cls(**data)


def to_input_grid(clean: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A target on the input's pixel grid: a 2x (--task jdsr) target is averaged over 2x2 blocks, so the
    input/target fit compares the same areas; a same-size target is returned as it is."""
    if clean.shape == tuple(shape):
        return clean
    factor = clean.shape[0] // shape[0]
    blocks = np.asarray(clean, dtype=np.float32)[: shape[0] * factor, : shape[1] * factor]
    return blocks.reshape(shape[0], factor, shape[1], factor).mean(axis=(1, 3))


def input_frame_fit(noisy_n: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line noisy_n ~ slope * clean + intercept."""
    x = np.asarray(clean, dtype=np.float64).ravel()
    y = np.asarray(noisy_n, dtype=np.float64).ravel()
    if x.size > 1 << 22:
        step = x.size // (1 << 22) + 1
        x, y = x[::step], y[::step]
    x_c = x - x.mean()
    denominator = float(np.dot(x_c, x_c))
    if denominator <= 0:
        return 0.0, float(y.mean())
    slope = float(np.dot(x_c, y - y.mean())) / denominator
    return slope, float(y.mean() - slope * x.mean())


def fit_normalization(method: str, percentiles: tuple[float, float], target: str,
                      images: list[np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]] = ()) -> Normalization:
    """For `meanstd`, the mean/std over all training images (noisy and clean, as the original code did);
    for target "fit", the mean affine map from input-frame targets to their own scale over `pairs`."""
    if method == "percentile":
        normalization = Normalization("percentile", *percentiles, target=target)
        if target == "fit":
            normalization.gain, normalization.bias = _mean_map_to_own(normalization, pairs)
        return normalization
    total = count = sq = 0.0
    for image in images:
        values = np.asarray(image, dtype=np.float64)
        total += values.sum()
        sq += np.square(values).sum()
        count += values.size
    mean = total / count
    normalization = Normalization("meanstd", *percentiles, mean=float(mean),
                                  std=float(np.sqrt(max(sq / count - mean**2, 0.0))), target=target)
    if target == "fit":
        normalization.gain, normalization.bias = _mean_map_to_own(normalization, pairs)
    return normalization


def _mean_map_to_own(normalization: Normalization, pairs) -> tuple[float, float]:
    """Mean (gain, bias) with own-normalized target ~ gain * input-frame target + bias, over the pairs."""
    gains, biases = [], []
    for noisy, clean in pairs:
        slope, intercept = input_frame_fit(normalization.normalize(noisy), to_input_grid(clean, noisy.shape))
        if slope <= EPS:
            continue
        offset, scale = normalization.stats(clean)
        gains.append(1.0 / (slope * scale))
        biases.append(-intercept / (slope * scale) - offset / scale)
    return (float(np.mean(gains)), float(np.mean(biases))) if gains else (1.0, 0.0)
