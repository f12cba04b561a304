"""A configurable 2-D U-Net for image-to-image denoising."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import UNetConfig


def _conv_block(in_ch: int, out_ch: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels_in in (in_ch, out_ch):
        layers.append(nn.Conv2d(channels_in, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, mode: str):
        super().__init__()
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(in_ch, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


def _sr_head(channels: int, out_channels: int, mode: str) -> nn.Sequential:
    """2x upsampling head for --task jdsr: a sub-pixel convolution (3x3 conv to 4x channels, pixel shuffle) or a
    stride-2 transposed convolution, then one 3x3 conv at the output resolution."""
    if mode == "shuffle":
        up: list[nn.Module] = [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
    else:
        up = [nn.ConvTranspose2d(channels, channels, 2, stride=2)]
    return nn.Sequential(*up, nn.ReLU(inplace=True), nn.Conv2d(channels, out_channels, 3, padding=1))


class UNet(nn.Module):
    """Encoder-decoder with skip connections; `residual=True` predicts a correction added to the input
    (with a 2x head, `model.sr_head`, to the bilinearly upsampled input).

    Any input size works: the image is reflect-padded to a multiple of 2**depth and cropped back.
    """

    __jit_unused_properties__ = ["multiple"]  # TorchScript (BioImage Model Zoo export) reads the plain copies below

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.pad_multiple: int = 2**config.depth
        self.residual: bool = config.residual
        self.scale: int = 1 if config.sr_head == "none" else 2  # the BMZ export passes a namespace, no .scale
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        channels = config.in_channels
        for width in widths[:-1]:
            self.encoders.append(_conv_block(channels, width, config.batch_norm))
            channels = width
        self.bottleneck = _conv_block(widths[-2], widths[-1], config.batch_norm)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(_Up(width * 2, width, config.upsample))
            self.decoders.append(_conv_block(width * 2, width, config.batch_norm))
        self.head = (nn.Conv2d(widths[0], config.out_channels, 1) if self.scale == 1
                     else _sr_head(widths[0], config.out_channels, config.sr_head))

    @property
    def multiple(self) -> int:
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.pad_multiple, (-width) % self.pad_multiple
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > max(pad_h, pad_w) else "replicate") if pad_h or pad_w else x
        skips = []
        out = padded
        for encoder in self.encoders:
            out = encoder(out)
            skips.append(out)
            out = F.max_pool2d(out, 2)
        out = self.bottleneck(out)
        for level, (up, decoder) in enumerate(zip(self.ups, self.decoders)):  # indexed: TorchScript has no reversed()
            out = decoder(torch.cat([up(out), skips[-1 - level]], dim=1))
        out = self.head(out)
        if self.residual:
            out = out + (padded if self.scale == 1 else
                         F.interpolate(padded, scale_factor=2.0, mode="bilinear", align_corners=False))
        return out[..., : self.scale * height, : self.scale * width]


def to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move a model to `device`; on CPU also into channels_last memory, which measurably sped up training
    steps (1.30x) and inference (1.46x) on the project's 2-core CPU (docs/performance.md). Only float
    rounding changes."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
