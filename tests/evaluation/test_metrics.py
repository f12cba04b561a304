"""Metrics: hand-computed values, agreement with the reference definitions, and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import METRICS, ms_ssim, ms_ssim_scales, psnr, scale_invariant_psnr, score_image, ssim


def careamics_si_psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    """CAREamics' scale_invariant_psnr (careamics/utils/metrics.py), restated step by step:
    range = (max - min) / std of gt; gt_ = (gt - mean) / std; pred is made zero-mean and scaled by
    sum(zm(gt_) * zm(pred)) / sum(zm(pred)^2); then skimage PSNR of zm(gt_) vs that, with that range."""
    from skimage.metrics import peak_signal_noise_ratio

    gt, pred = gt.astype(np.float64), pred.astype(np.float64)
    data_range = (gt.max() - gt.min()) / gt.std()
    gt_ = (gt - gt.mean()) / gt.std()
    gt_zm, pred_zm = gt_ - gt_.mean(), pred - pred.mean()
    fitted = pred_zm * (gt_zm * pred_zm).sum() / (pred_zm * pred_zm).sum()
    return float(peak_signal_noise_ratio(gt_zm, fitted, data_range=data_range))


def test_psnr_hand_computed():
    target = np.array([[0.0, 4.0], [2.0, 2.0]])
    prediction = target + np.array([[1.0, -1.0], [1.0, -1.0]])  # MSE 1, target range 4
    assert psnr(target, prediction) == pytest.approx(20 * math.log10(4.0))  # 12.0412 dB


def test_psnr_data_range_comes_from_the_target():
    target = np.array([[0.0, 4.0], [2.0, 2.0]])
    prediction = np.array([[1.0, 100.0], [1.0, 1.0]])  # a wide prediction must not widen the range
    mse = np.mean((target - prediction) ** 2)
    assert psnr(target, prediction) == pytest.approx(10 * math.log10(16.0 / mse))
    assert psnr(3 * target, 3 * prediction) == pytest.approx(psnr(target, prediction))  # unit-free


def test_si_psnr_hand_computed():
    # target [0, 0, 3]: mean 1, std sqrt(2); normalized [-1, -1, 2]/sqrt(2); range 3/sqrt(2)
    # prediction [0, 1, 2] centred [-1, 0, 1]; LS scale 3/(2 sqrt(2)); residual [0.5, -1, 0.5]/sqrt(2)
    # MSE 0.25 -> PSNR = 10 log10(4.5 / 0.25) = 10 log10(18)
    target, prediction = np.array([[0.0, 0.0, 3.0]]), np.array([[0.0, 1.0, 2.0]])
    assert scale_invariant_psnr(target, prediction) == pytest.approx(10 * math.log10(18.0))


def test_si_psnr_matches_careamics_definition():
    rng = np.random.default_rng(1)
    target = rng.random((32, 40)) * 255
    prediction = 0.3 * target + rng.normal(0, 20, target.shape) + 17
    assert scale_invariant_psnr(target, prediction) == pytest.approx(careamics_si_psnr(target, prediction), abs=1e-9)
    uint8 = np.clip(target, 0, 255).astype(np.uint8), np.clip(prediction, 0, 255).astype(np.uint8)
    assert scale_invariant_psnr(*uint8) == pytest.approx(careamics_si_psnr(*uint8), abs=1e-9)


@pytest.mark.parametrize("scale, offset", [(1.0, 50.0), (3.7, -12.0), (0.01, 1e4), (-0.5, 3.0)])
def test_si_psnr_is_unchanged_by_affine_changes_of_the_prediction(scale, offset):
    rng = np.random.default_rng(2)
    target = rng.random((24, 24))
    prediction = target + rng.normal(0, 0.1, target.shape)
    assert scale_invariant_psnr(target, scale * prediction + offset) == pytest.approx(
        scale_invariant_psnr(target, prediction), abs=1e-9)


def test_si_psnr_of_an_affine_copy_is_huge_or_infinite():
    target = np.arange(12.0).reshape(3, 4)
    assert scale_invariant_psnr(target, 2 * target + 1) > 300  # rounding error only (CAREamics: ~332 dB)
    assert scale_invariant_psnr(np.array([[0.0, 1.0]]), np.array([[5.0, 7.0]])) == math.inf


def test_ssim_hand_computed_on_one_window():
    # skimage uses a 7x7 window and crops 3 pixels at each border: a 7x7 image is exactly one window.
    # prediction = target + 12: the contrast-structure term is 1, the luminance term is
    # (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with mu_x = 24, mu_y = 36, C1 = (0.01 * 48)^2.
    target = np.arange(49.0).reshape(7, 7)
    c1 = (0.01 * 48) ** 2
    expected = (2 * 24 * 36 + c1) / (24**2 + 36**2 + c1)
    assert ssim(target, target + 12) == pytest.approx(expected, rel=1e-9)


def test_ssim_and_ms_ssim_of_identical_images_are_one():
    target = np.random.default_rng(3).random((180, 190))
    assert ssim(target, target) == pytest.approx(1.0)
    assert ms_ssim(target, target) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_matches_torchmetrics_module_as_careamics_calls_it():
    import torch
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    rng = np.random.default_rng(4)
    target = rng.random((192, 200)) * 100
    prediction = target + rng.normal(0, 15, target.shape)
    metric = MultiScaleStructuralSimilarityIndexMeasure(data_range=float(target.max() - target.min()))
    expected = metric(torch.Tensor(prediction[None, None]), torch.Tensor(target[None, None])).item()
    assert ms_ssim(target, prediction) == pytest.approx(expected, abs=1e-6)


def test_ms_ssim_drops_with_noise_and_handles_small_images():
    rng = np.random.default_rng(5)
    target = rng.random((64, 64))
    noisy = [target + rng.normal(0, s, target.shape) for s in (0.05, 0.2, 0.5)]
    values = [ms_ssim(target, n) for n in noisy]
    assert values[0] > values[1] > values[2]
    assert ms_ssim_scales((176, 176)) == 5 and ms_ssim_scales((175, 300)) == 4 and ms_ssim_scales((64, 64)) == 3
    assert ms_ssim_scales((8, 8)) == 0 and math.isnan(ms_ssim(target[:8, :8], target[:8, :8]))


def test_score_image_returns_all_metrics_and_checks_shapes():
    target = np.random.default_rng(6).random((40, 40))
    scores = score_image(target, target * 0.5 + 0.1)
    assert set(scores) == set(METRICS)
    assert scores["si_psnr"] > 300 and scores["ssim"] < 1
    with pytest.raises(ValueError, match="does not match"):
        score_image(target, target[:, :-1])
