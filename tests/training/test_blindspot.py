"""Noise2Void blind-spot masking: what the network may and may not see, and the loss on masked pixels only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.blindspot import BlindSpotSampler, MaskedLoss, _offsets, blind_spot, improved, selection_metric
from training.config import TrainConfig, UNetConfig
from training.errors import UserError
from training.data.layouts import ImagePair, PairSource
from training.data.normalization import Normalization
from training.model import UNet


def _patches(seed: int = 0, shape=(3, 1, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)  # distinct values: sources are traceable


def test_offsets_cover_the_neighbourhood_uniformly_and_never_the_centre():
    dy, dx = _offsets(48_000, 2, np.random.default_rng(0))
    assert not np.any((dy == 0) & (dx == 0))
    assert dy.min() == dx.min() == -2 and dy.max() == dx.max() == 2
    counts = np.unique(np.stack([dy, dx]), axis=1, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 0.85 * 2000 and counts.max() < 1.15 * 2000


@pytest.mark.parametrize("fraction, radius", [(0.01, 2), (0.05, 1), (0.2, 3)])
def test_masked_pixels_take_a_neighbours_value_and_nothing_else_changes(fraction, radius):
    patches = _patches()
    masked, mask = blind_spot(patches, fraction, radius, np.random.default_rng(1))
    on = mask.astype(bool)
    assert np.array_equal(masked[~on], patches[~on])
    assert on.sum(axis=(1, 2, 3)).max() <= round(fraction * 32 * 32)
    assert on.sum(axis=(1, 2, 3)).min() >= 0.9 * round(fraction * 32 * 32)  # few give up finding a free neighbour
    for b, c, y, x in zip(*np.nonzero(on)):
        window = patches[b, c, max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
        assert masked[b, c, y, x] != patches[b, c, y, x] and masked[b, c, y, x] in window


def test_no_masked_pixels_own_value_appears_anywhere_in_the_input():
    patches = _patches(shape=(2, 1, 48, 48))
    masked, mask = blind_spot(patches, 0.2, 2, np.random.default_rng(3))  # dense: many masked neighbours
    hidden = patches[mask.astype(bool)]
    assert hidden.size > 0.18 * patches.size
    assert not np.isin(hidden, masked).any()


def test_model_output_at_masked_pixels_does_not_depend_on_their_original_values():
    """The receptive-field property: change the original values at the masked pixels, mask again with the
    same random draws, and the network's output is identical; change an unmasked neighbour and it is not."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=4)).eval()
    patches = _patches(shape=(1, 1, 32, 32))
    masked, mask = blind_spot(patches, 0.05, 2, np.random.default_rng(5))
    on = mask.astype(bool)
    altered = patches.copy()
    altered[on] += 10.0
    masked_altered, mask_altered = blind_spot(altered, 0.05, 2, np.random.default_rng(5))
    assert np.array_equal(mask, mask_altered)
    with torch.no_grad():
        out = model(torch.from_numpy(masked))
        out_altered = model(torch.from_numpy(masked_altered))
    assert torch.equal(out[torch.from_numpy(on)], out_altered[torch.from_numpy(on)])

    # the same check can fail: an unmasked pixel next to a masked one does reach it
    b, c, y, x = (int(v) for v in np.argwhere(on)[0])
    ny = y + 1 if y + 1 < 32 and not on[b, c, y + 1, x] else y - 1
    neighbour = patches.copy()
    neighbour[b, c, ny, x] += 10.0
    with torch.no_grad():
        out_neighbour = model(torch.from_numpy(blind_spot(neighbour, 0.05, 2, np.random.default_rng(5))[0]))
    assert out_neighbour[b, c, y, x] != out[b, c, y, x]


def test_masked_loss_counts_masked_pixels_only():
    rng = np.random.default_rng(0)
    prediction = torch.from_numpy(rng.random((2, 1, 8, 8)).astype(np.float32))
    target = torch.from_numpy(rng.random((2, 1, 8, 8)).astype(np.float32))
    mask = torch.zeros_like(target)
    mask[0, 0, 1, 2] = mask[1, 0, 5, 5] = 1.0
    packed = torch.cat([target, mask], dim=1)
    expected_l1 = ((prediction - target).abs() * mask).sum() / 2
    assert MaskedLoss("l1")(prediction, packed) == pytest.approx(float(expected_l1))
    assert MaskedLoss("mse")(prediction, packed) == pytest.approx(float(((prediction - target) ** 2 * mask).sum() / 2))
    elsewhere = prediction.clone()
    elsewhere[mask == 0] += 5.0
    assert MaskedLoss("l1")(elsewhere, packed) == MaskedLoss("l1")(prediction, packed)


def test_sampler_never_reads_targets_and_packs_the_noisy_patch_with_its_mask():
    rng = np.random.default_rng(0)
    noisy = rng.random((40, 40)).astype(np.float32)
    source = PairSource("a", "a", None, None, None)  # paths are not read by the sampler
    config = TrainConfig(patch_size=16, batch_size=4, n2v_fraction=0.05)
    for clean in (None, np.full((40, 40), np.nan, np.float32)):  # noisy-only, or a target it must ignore
        sampler = BlindSpotSampler([ImagePair(source, noisy, clean)], Normalization(target="own"), config,
                                   np.random.default_rng(1))
        x, packed = sampler.sample()
        assert x.shape == (4, 1, 16, 16) and packed.shape == (4, 2, 16, 16) and np.isfinite(packed).all()
        original, mask = packed[:, :1], packed[:, 1:].astype(bool)
        assert np.array_equal(x[~mask], original[~mask]) and not np.any(x[mask] == original[mask])
        assert set(np.unique(packed[:, 1:])) == {0.0, 1.0}


def test_model_selection_uses_no_clean_data_for_n2v():
    metric = selection_metric("auto", "n2v", "input")
    assert metric == "val_loss"
    best = {"val_loss": 0.2, "val_psnr": 30.0}
    assert improved(metric, {"val_loss": 0.1, "val_psnr": 10.0}, best)
    assert not improved(metric, {"val_loss": 0.3, "val_psnr": 40.0}, best)
    assert improved(metric, {"val_loss": 9.0}, {})
    with pytest.raises(UserError, match="select_metric"):
        TrainConfig(task="n2v", select_metric="psnr").validate()


def test_model_selection_by_si_psnr_where_targets_are_in_other_units():
    assert selection_metric("auto", "denoise", "input") == "val_psnr"
    assert selection_metric("auto", "denoise", "fit") == "val_si_psnr"  # the 8-bit release's per-image stretch
    assert selection_metric("ssim", "denoise", "fit") == "val_ssim"
    best = {"val_psnr": 27.0, "val_si_psnr": 32.0, "val_ssim": 0.7}
    assert improved("val_psnr", {"val_psnr": 27.1, "val_si_psnr": 31.0, "val_ssim": 0.6}, best)
    assert not improved("val_si_psnr", {"val_psnr": 27.1, "val_si_psnr": 31.0, "val_ssim": 0.6}, best)
    assert improved("val_ssim", {"val_psnr": 20.0, "val_si_psnr": 20.0, "val_ssim": 0.8}, best)
