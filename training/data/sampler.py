"""Random training patches from images held in memory (or memory-mapped): no per-step file I/O."""

from __future__ import annotations

import numpy as np

from training.data.layouts import ImagePair
from training.data.noise_model import fit_noise_model
from training.data.normalization import Normalization


class PatchSampler:
    """Draws batches of aligned (noisy, clean) patches, normalized, with random flips and 90-degree turns.

    Images are picked with probability proportional to their area so every pixel is equally likely.
    Targets are scaled as `Normalization.target_stats` says (with the input's statistics unless the data
    were contrast-stretched image by image). With `scale` 2 (--task jdsr) targets are twice the input's size:
    the input patch at (y, x) of side p pairs with the target patch at (2y, 2x) of side 2p, and both get the
    same flip and turn. With `synthetic_noise` f > 0, that share of the inputs is a fresh noise realization
    drawn from the clean patch by the pair's fitted noise model (training.data.noise_model), normalized with
    the real frame's statistics.
    """

    def __init__(self, pairs: list[ImagePair], normalization: Normalization, patch_size: int, batch_size: int,
                 augment: bool, rng: np.random.Generator, scale: int = 1, synthetic_noise: float = 0.0):
        if not pairs:
            raise ValueError("PatchSampler needs at least one image pair")
        self.pairs = pairs
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.augment = augment
        self.rng = rng
        self.scale = scale
        self.stats = [(normalization.stats(p.noisy), normalization.target_stats(p.noisy, p.clean)) for p in pairs]
        areas = np.array([p.noisy.shape[0] * p.noisy.shape[1] for p in pairs], dtype=np.float64)
        self.weights = areas / areas.sum()
        if synthetic_noise and scale != 1:
            raise ValueError("synthetic noise needs same-size targets (scale 1)")
        self.synthetic_noise = synthetic_noise
        self.noise_models = [fit_noise_model(p.noisy, p.clean) for p in pairs] if synthetic_noise else []

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        size = self.patch_size
        x = np.empty((self.batch_size, 1, size, size), dtype=np.float32)
        y = np.empty((self.batch_size, 1, self.scale * size, self.scale * size), dtype=np.float32)
        for b, index in enumerate(self.rng.choice(len(self.pairs), size=self.batch_size, p=self.weights)):
            pair = self.pairs[index]
            noisy, clean = _crop_pair(pair.noisy, pair.clean, size, self.rng, self.scale)
            model = self.noise_models[index] if self.synthetic_noise else None
            if model is not None and self.rng.random() < self.synthetic_noise:
                noisy = model.sample(clean, self.rng)
            (in_off, in_scale), (out_off, out_scale) = self.stats[index]
            noisy = (noisy - np.float32(in_off)) / np.float32(in_scale)
            clean = (clean - np.float32(out_off)) / np.float32(out_scale)
            if self.augment:
                k, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
                noisy, clean = np.rot90(noisy, k), np.rot90(clean, k)
                if flip:
                    noisy, clean = noisy[:, ::-1], clean[:, ::-1]
            x[b, 0], y[b, 0] = noisy, clean
        return x, y


def _crop_pair(noisy: np.ndarray, clean: np.ndarray, size: int, rng: np.random.Generator, scale: int = 1):
    height, width = noisy.shape
    top = int(rng.integers(height - size + 1)) if height >= size else 0
    left = int(rng.integers(width - size + 1)) if width >= size else 0
    noisy = np.asarray(noisy[top:top + size, left:left + size], dtype=np.float32)
    clean = np.asarray(clean[scale * top:scale * (top + size), scale * left:scale * (left + size)], dtype=np.float32)
    if noisy.shape != (size, size):  # image smaller than a patch: mirror it out to the patch size
        pad = ((0, size - noisy.shape[0]), (0, size - noisy.shape[1]))
        noisy = np.pad(noisy, pad, mode="symmetric")
        clean = np.pad(clean, [(0, scale * after) for _, after in pad], mode="symmetric")
    return noisy, clean

