"""training.data.noise_model: the fit recovers the noise it is given; draws follow the fitted lines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.data.noise_model import NoiseModel, fit_noise_model

TRUE = NoiseModel(slope=0.6, intercept=12.0, gain=20.0, zero=8.0, low=0.0, high=255.0, integer=True)


def clean_ramp(shape=(512, 512)):
    """A target spanning 0..200 (8-bit-like, whole numbers) so the fit sees many intensity levels."""
    return np.round(np.tile(np.linspace(0, 200, shape[1]), (shape[0], 1)))


def test_fit_recovers_the_parameters_of_the_model_that_drew_the_noise():
    clean = clean_ramp()
    noisy = TRUE.sample(clean, np.random.default_rng(0))
    fitted = fit_noise_model(noisy, clean)
    assert fitted is not None
    assert fitted.slope == pytest.approx(TRUE.slope, rel=0.03)
    assert fitted.intercept == pytest.approx(TRUE.intercept, abs=1.0)
    assert fitted.gain == pytest.approx(TRUE.gain, rel=0.1)
    assert fitted.zero == pytest.approx(TRUE.zero, abs=3.0)
    assert fitted.integer and (fitted.low, fitted.high) == (noisy.min(), 255.0)  # the frame's own range


def test_draws_have_the_fitted_mean_variance_and_an_emccd_skew():
    """At a fixed level: mean = slope*c + intercept, variance = gain*(mean - zero), and the skew of a
    compound Poisson-exponential, 1.5x that of Poisson noise with the same variance."""
    model = NoiseModel(slope=1.0, intercept=0.0, gain=20.0, zero=10.0, low=-1e9, high=1e9, integer=False)
    draws = model.sample(np.full(200_000, 70.0), np.random.default_rng(1)).astype(np.float64)
    photons = 2 * (70.0 - 10.0) / 20.0  # mean / theta with theta = gain / 2
    assert draws.mean() == pytest.approx(70.0, rel=0.01)
    assert draws.var() == pytest.approx(20.0 * 60.0, rel=0.03)
    assert stats.skew(draws) == pytest.approx(1.5 / np.sqrt(photons / 2), rel=0.1)


def test_draws_are_rounded_and_clipped_like_the_frame():
    draws = TRUE.sample(clean_ramp((64, 64)) * 2, np.random.default_rng(2))
    assert draws.dtype == np.float32
    assert draws.min() >= 0 and draws.max() <= 255 and (draws == 255).any()
    assert np.array_equal(draws, np.round(draws))


@pytest.mark.parametrize("noisy, clean", [
    (np.random.default_rng(3).normal(50, 5, (128, 128)), np.full((128, 128), 40.0)),  # flat target
    (np.random.default_rng(4).normal(50, 5, (128, 128)), clean_ramp((128, 128))),  # noise unrelated to the target
    (np.full((128, 128), 7.0), clean_ramp((128, 128))),  # constant frame
])
def test_no_model_where_the_pair_shows_no_signal_dependent_noise(noisy, clean):
    assert fit_noise_model(noisy, clean) is None


def test_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        fit_noise_model(np.zeros((8, 8)), np.zeros((8, 9)))
