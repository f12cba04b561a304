"""training.data.sampler: aligned, normalized, augmented patches; reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.layouts import ImagePair, PairSource
from training.data.normalization import Normalization
from training.data.sampler import PatchSampler


def pair(noisy, clean=None, name="p"):
    clean = noisy if clean is None else clean
    return ImagePair(PairSource(name, name, None, None, None), noisy, clean)


def images(seed=0, shapes=((40, 48), (33, 35))):
    rng = np.random.default_rng(seed)
    out = []
    for i, shape in enumerate(shapes):
        clean = rng.uniform(100, 400, shape).astype(np.float32)
        out.append(pair(clean + rng.normal(0, 20, shape).astype(np.float32), clean, f"img{i}"))
    return out


def sampler(pairs, seed=0, patch=16, batch=4, augment=True, norm=None):
    return PatchSampler(pairs, norm or Normalization("percentile"), patch, batch, augment, np.random.default_rng(seed))


def test_batch_shape_and_dtype():
    x, y = sampler(images(), patch=16, batch=5).sample()
    assert x.shape == y.shape == (5, 1, 16, 16)
    assert x.dtype == y.dtype == np.float32
    assert np.isfinite(x).all() and np.isfinite(y).all()


def test_patches_are_normalized_with_the_images_statistics():
    pairs = images()
    norm = Normalization("percentile")
    x, y = sampler(pairs, batch=64, norm=norm).sample()
    # inputs scaled by their own 1..99.8 percentiles land roughly in [0, 1]
    assert -0.5 < float(np.median(x)) < 1.5
    assert x.min() > -2 and x.max() < 3


@pytest.mark.parametrize("augment", [False, True])
def test_noisy_and_clean_patches_are_aligned(augment):
    """Target = affine function of the input; with "own" target scaling both normalize to the same patch,
    so any misalignment (different crop, flip or rotation) would show."""
    rng = np.random.default_rng(3)
    noisy = rng.uniform(0, 1000, (37, 41)).astype(np.float32)
    pairs = [pair(noisy, noisy * 2 + 50)]
    x, y = sampler(pairs, batch=16, augment=augment, norm=Normalization("percentile", target="own")).sample()
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_without_augmentation_a_patch_is_a_crop_of_the_normalized_image():
    noisy = np.arange(30 * 30, dtype=np.float32).reshape(30, 30)
    norm = Normalization("percentile")
    normalized = norm.normalize(noisy)
    x, _ = sampler([pair(noisy)], batch=8, augment=False, norm=norm).sample()
    for patch in x[:, 0]:
        top, left = np.unravel_index(np.argmin(np.abs(normalized - patch[0, 0])), normalized.shape)
        np.testing.assert_allclose(patch, normalized[top:top + 16, left:left + 16], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(10, 7), (16, 5), (40, 3), (1, 1)])
def test_images_smaller_than_a_patch_are_mirrored_out(shape):
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0, 100, shape).astype(np.float32)
    norm = Normalization("percentile")
    x, y = sampler([pair(noisy)], patch=16, batch=3, augment=False, norm=norm).sample()
    assert x.shape == (3, 1, 16, 16)
    assert np.isfinite(x).all()
    normalized = norm.normalize(noisy)
    h, w = min(shape[0], 16), min(shape[1], 16)
    if shape[0] <= 16:  # the original pixels sit in the top-left corner, the rest is their mirror
        np.testing.assert_allclose(x[0, 0, :h, :w], normalized[:h, :w], rtol=1e-6)
    assert set(np.round(x[0, 0].ravel(), 5)) <= set(np.round(normalized.ravel(), 5))


def test_same_seed_same_batches_different_seed_different_batches():
    a, b, c = sampler(images(), seed=11), sampler(images(), seed=11), sampler(images(), seed=12)
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = a.sample(), b.sample(), c.sample()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert not np.array_equal(xa, xc)


def test_images_are_drawn_in_proportion_to_their_area():
    big = pair(np.zeros((60, 60), np.float32), name="big")
    small = pair(np.ones((20, 20), np.float32), name="small")
    s = sampler([big, small], batch=2000, augment=False, norm=Normalization("meanstd"))
    np.testing.assert_allclose(s.weights, [0.9, 0.1])
    x, _ = s.sample()
    share_small = float(np.mean(x[:, 0, 0, 0] == 1.0))
    assert 0.06 < share_small < 0.14  # expected 0.1; binomial sd with n=2000 is 0.007


def test_no_pairs_is_an_error():
    with pytest.raises(ValueError, match="at least one image pair"):
        sampler([])


def emccd_pairs():
    from training.data.noise_model import NoiseModel
    model = NoiseModel(slope=0.6, intercept=12.0, gain=20.0, zero=8.0, low=0.0, high=255.0, integer=True)
    rng = np.random.default_rng(5)
    clean = np.round(np.tile(np.linspace(0, 200, 128), (128, 1))).astype(np.float32)
    return [pair(model.sample(clean, rng), clean, "emccd")]


def test_synthetic_noise_redraws_inputs_and_keeps_targets():
    pairs = emccd_pairs()
    real = PatchSampler(pairs, Normalization("percentile"), 32, 64, False, np.random.default_rng(0))
    drawn = PatchSampler(pairs, Normalization("percentile"), 32, 64, False, np.random.default_rng(0),
                         synthetic_noise=1.0)
    assert drawn.noise_models[0] is not None
    (x_real, y_real), (x_drawn, y_drawn) = real.sample(), drawn.sample()
    assert not np.array_equal(x_real, x_drawn)
    assert abs(x_real.mean() - x_drawn.mean()) < 0.05 and abs(x_real.std() / x_drawn.std() - 1) < 0.1
    assert abs(y_real.mean() - y_drawn.mean()) < 0.1  # targets are crops of the same image, normalized alike


def test_synthetic_noise_off_leaves_the_random_stream_alone():
    pairs = emccd_pairs()
    a = PatchSampler(pairs, Normalization("percentile"), 16, 4, True, np.random.default_rng(3))
    b = PatchSampler(pairs, Normalization("percentile"), 16, 4, True, np.random.default_rng(3), synthetic_noise=0.0)
    for _ in range(3):
        assert all(np.array_equal(u, v) for u, v in zip(a.sample(), b.sample()))


def test_synthetic_noise_needs_same_size_targets():
    with pytest.raises(ValueError, match="scale 1"):
        PatchSampler(emccd_pairs(), Normalization("percentile"), 16, 4, True, np.random.default_rng(0), scale=2,
                     synthetic_noise=0.5)
