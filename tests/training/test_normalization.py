"""training.data.normalization: images to the network's scale and back, losslessly."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.normalization import Normalization, fit_normalization

RNG = np.random.default_rng(0)
IMAGES = {
    "uint8": RNG.integers(0, 256, (33, 40)).astype(np.uint8),
    "uint16-counts": (100 + RNG.poisson(300, (31, 29))).astype(np.uint16),
    "float-zscore": RNG.normal(0.2, 1.3, (40, 40)).astype(np.float32),
    "float-large": RNG.uniform(1e4, 6e4, (16, 16)).astype(np.float32),
}


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("method", ["percentile", "meanstd"])
def test_normalize_then_denormalize_round_trips(name, method):
    image = IMAGES[name]
    norm = fit_normalization(method, (1.0, 99.8), "input", [image])
    stats = norm.stats(image)
    normalized = norm.normalize(image, stats)
    assert normalized.dtype == np.float32
    assert relative_error(norm.denormalize(normalized, stats), image) < 1e-5


def test_percentile_maps_the_percentiles_to_0_and_1():
    image = IMAGES["uint16-counts"]
    norm = Normalization("percentile", 2.0, 98.0)
    lo, hi = np.percentile(image.astype(np.float32), [2.0, 98.0])
    assert norm.stats(image) == pytest.approx((lo, hi - lo))
    normalized = norm.normalize(image)
    assert np.percentile(normalized, 2.0) == pytest.approx(0.0, abs=1e-6)
    assert np.percentile(normalized, 98.0) == pytest.approx(1.0, abs=1e-6)


def test_percentile_of_a_constant_image_is_finite():
    image = np.full((8, 8), 500.0, np.float32)
    norm = Normalization("percentile")
    stats = norm.stats(image)
    assert stats[1] > 0
    normalized = norm.normalize(image, stats)
    assert np.isfinite(normalized).all()
    assert relative_error(norm.denormalize(normalized, stats), image) < 1e-5


def test_meanstd_uses_dataset_statistics_of_noisy_and_clean_images():
    a, b = IMAGES["uint8"], IMAGES["uint16-counts"]
    norm = fit_normalization("meanstd", (1.0, 99.8), "input", [a, b])
    values = np.concatenate([a.ravel(), b.ravel()]).astype(np.float64)
    assert norm.mean == pytest.approx(values.mean(), rel=1e-9)
    assert norm.std == pytest.approx(values.std(), rel=1e-9)
    assert norm.stats(a) == norm.stats(b) == (norm.mean, norm.std)  # the same for every image
    normalized = norm.normalize(b)
    np.testing.assert_allclose(normalized, (b - values.mean()) / values.std(), rtol=1e-5, atol=1e-6)


def test_target_stats_input_versus_own():
    noisy = IMAGES["uint8"].astype(np.float32)
    clean = noisy * 3 + 1000  # a target on another scale, as in the per-image stretched 8-bit release
    own = Normalization("percentile", target="own")
    inp = Normalization("percentile", target="input")
    assert inp.target_stats(noisy, clean) == inp.stats(noisy)
    assert own.target_stats(noisy, clean) == own.stats(clean)
    # "own": the target lands on the input's normalized scale; "input": it keeps its own offset and gain
    np.testing.assert_allclose(own.normalize(clean, own.target_stats(noisy, clean)), own.normalize(noisy),
                               rtol=1e-4, atol=1e-4)
    lo, scale = inp.stats(noisy)
    np.testing.assert_allclose(inp.normalize(clean, inp.target_stats(noisy, clean)), (clean - lo) / scale, rtol=1e-6)
    assert inp.normalize(clean, inp.target_stats(noisy, clean)).mean() > 4  # far outside the input's [0, 1]
    # meanstd ignores the image for both
    ms = Normalization("meanstd", mean=5.0, std=2.0, target="own")
    assert ms.target_stats(noisy, clean) == (5.0, 2.0)


def test_dict_round_trip():
    norm = Normalization("meanstd", 0.5, 99.5, mean=154.5, std=66.0, target="own")
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_large_images_are_subsampled_consistently():
    image = np.random.default_rng(1).normal(100, 10, (2100, 2100)).astype(np.float32)
    norm = Normalization("percentile")
    lo, scale = norm.stats(image)
    exact_lo, exact_hi = np.percentile(image, [1.0, 99.8])
    assert lo == pytest.approx(exact_lo, rel=1e-3)
    assert lo + scale == pytest.approx(exact_hi, rel=1e-3)


def test_fit_puts_every_target_in_a_consistent_frame_on_the_targets_typical_scale():
    """Per-image stretched pairs with input/target slopes 0.3..0.9: after "fit", the normalized input relates to
    its normalized target by the same line for every image; the dataset-wide map lands on the mean own scale."""
    rng = np.random.default_rng(3)
    pairs = []
    for slope in (0.3, 0.6, 0.9):
        clean = gaussian_blobs(rng)
        noisy = slope * clean + 20 + rng.normal(0, 8, clean.shape)
        pairs.append((noisy, clean))
    norm = fit_normalization("percentile", (1.0, 99.8), "fit", [], pairs)
    own = Normalization("percentile", target="own")
    lines, own_lines = [], []
    for noisy, clean in pairs:
        target_n = norm.normalize(clean, norm.target_stats(noisy, clean))
        lines.append(np.polyfit(target_n.ravel(), norm.normalize(noisy).ravel(), 1))
        own_lines.append(np.polyfit(target_n.ravel(), own.normalize(clean).ravel(), 1))
    lines = np.array(lines)
    np.testing.assert_allclose(lines, lines[:1].repeat(len(pairs), 0), atol=1e-6)  # one frame for all images
    np.testing.assert_allclose(np.mean(own_lines, axis=0), [1.0, 0.0], atol=0.05)  # own scale on average
    own_slopes = [np.polyfit(own.normalize(c).ravel(), own.normalize(n).ravel(), 1)[0] for n, c in pairs]
    assert np.ptp(own_slopes) > 0.3  # while "own" leaves the per-image slopes as they were
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_fit_falls_back_to_the_targets_own_scale_for_a_blank_target():
    norm = Normalization("percentile", target="fit", gain=1.2, bias=0.1)
    noisy = np.random.default_rng(0).normal(10, 1, (32, 32))
    blank = np.full((32, 32), 7.0)
    assert norm.target_stats(noisy, blank) == norm.stats(blank)
    assert Normalization.from_dict({k: v for k, v in norm.to_dict().items() if k not in ("gain", "bias")}).gain == 1.0


def gaussian_blobs(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    image = np.zeros((size, size))
    image[rng.integers(size, size=40), rng.integers(size, size=40)] = rng.uniform(500, 2000, 40)
    return gaussian_filter(image, 3) + 10
