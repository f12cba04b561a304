"""training.model: the U-Net keeps any image size, presets build the intended network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.config import TrainConfig, UNetConfig
from training.model import UNet, count_parameters

torch.set_grad_enabled(True)


@pytest.mark.parametrize("size", [(37, 50), (7, 13), (1, 1), (3, 100), (16, 16), (64, 33)])
@pytest.mark.parametrize("config", [
    UNetConfig(depth=2, base_channels=4),
    UNetConfig(depth=3, base_channels=4, batch_norm=True, residual=False, upsample="transpose"),
    UNetConfig(depth=1, base_channels=2, residual=False),
], ids=["d2-bilinear-residual", "d3-bn-transpose", "d1"])
def test_output_has_the_input_size(size, config):
    torch.manual_seed(0)
    model = UNet(config).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_odd_size_in_training_mode_backpropagates():
    model = UNet(UNetConfig(depth=2, base_channels=4, batch_norm=True)).train()
    x = torch.randn(2, 1, 37, 50)
    y = model(x)
    assert y.shape == x.shape
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_padding_does_not_leak_into_the_crop():
    """Each output pixel of a size that needs padding equals the same pixel computed on a reflect-padded
    input by hand: the network crops back exactly what it padded."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=4)).eval()
    x = torch.randn(1, 1, 13, 14)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :13, :14])


def test_seed_preset_is_the_original_network():
    config = TrainConfig.from_dict({"preset": "seed"})
    assert config.model.base_channels == 64
    assert config.model.depth == 4
    assert config.model.batch_norm is True
    assert config.model.upsample == "transpose"
    assert config.model.residual is False
    model = UNet(config.model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2 * (4 + 1 + 4)
    transposed = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == 4
    assert [m.out_channels for m in model.encoders[0].modules() if isinstance(m, nn.Conv2d)] == [64, 64]
    assert model.bottleneck[0].out_channels == 64 * 2**4
    assert model.multiple == 16


def test_preset_values_can_be_overridden_key_by_key():
    config = TrainConfig.from_dict({"preset": "seed", "model": {"depth": 2}})
    assert (config.model.depth, config.model.base_channels, config.model.batch_norm) == (2, 64, True)


def test_residual_with_a_zero_head_is_the_identity():
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=4, residual=True)).eval()
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    x = torch.randn(3, 1, 21, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x, rtol=0, atol=0)
    # without the skip the same zero head gives zeros, so the identity above comes from `residual`
    plain = UNet(UNetConfig(depth=2, base_channels=4, residual=False)).eval()
    nn.init.zeros_(plain.head.weight)
    nn.init.zeros_(plain.head.bias)
    with torch.no_grad():
        assert torch.count_nonzero(plain(x)) == 0


def test_parameter_count_grows_with_width_and_depth():
    small = count_parameters(UNet(UNetConfig(depth=2, base_channels=4)))
    wider = count_parameters(UNet(UNetConfig(depth=2, base_channels=8)))
    deeper = count_parameters(UNet(UNetConfig(depth=3, base_channels=4)))
    assert 0 < small < wider and small < deeper
    assert small == sum(p.numel() for p in UNet(UNetConfig(depth=2, base_channels=4)).parameters())
