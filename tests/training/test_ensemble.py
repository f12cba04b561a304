"""Test-time augmentation over the 8 flips/turns (training/ensemble.py)."""

from __future__ import annotations

import numpy as np
import torch

from training.config import UNetConfig
from training.data.normalization import Normalization
from training.ensemble import DihedralEnsemble, with_tta
from training.model import UNet
from training.predict import predict_image, tiled_predict


def _net(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(depth=2, base_channels=4)).eval()


def _transforms(x: torch.Tensor):
    for flip in (False, True):
        f = torch.flip(x, (-1,)) if flip else x
        for k in range(4):
            yield flip, k, torch.rot90(f, k, (-2, -1))


def test_the_ensemble_is_the_mean_of_the_eight_back_transformed_outputs():
    net = _net()
    x = torch.randn(2, 1, 32, 48)  # not square: every turn must still map back onto the input grid
    with torch.no_grad():
        outputs = []
        for flip, k, t in _transforms(x):
            y = torch.rot90(net(t), -k, (-2, -1))
            outputs.append(torch.flip(y, (-1,)) if flip else y)
        expected = torch.stack(outputs).mean(0)
        got = DihedralEnsemble(net)(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, net(x), atol=1e-4)  # a random net is not equivariant: TTA changes it


def test_the_ensemble_is_invariant_to_the_transforms_of_its_input():
    tta = DihedralEnsemble(_net(1))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        reference = tta(x)
        for flip, k, t in _transforms(x):
            y = torch.rot90(tta(t), -k, (-2, -1))
            torch.testing.assert_close(torch.flip(y, (-1,)) if flip else y, reference, rtol=1e-4, atol=1e-5)


def test_tiled_prediction_works_through_the_wrapper():
    net = _net(2)
    tta = with_tta(net, True)
    assert with_tta(net, False) is net and tta.config is net.config
    image = np.random.default_rng(0).normal(100, 10, (80, 72)).astype(np.float32)
    whole = predict_image(tta, Normalization(), image)
    tiled = tiled_predict(tta, Normalization(), image, tile=48, overlap=16)
    assert tiled.shape == image.shape
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=2e-2 * float(image.std()))
