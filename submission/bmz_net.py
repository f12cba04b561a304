"""The network a BioImage Model Zoo package carries: the U-Net with the per-image normalization baked in.

Self-contained on purpose (torch only): `submission.bioimageio` copies this file's source, with
training/model.py's, into the package as the architecture of its PyTorch state-dict weights, so a consumer
needs neither this harness nor its config classes. The TorchScript weights are this module, scripted.

Why baked: the harness normalizes each image by its own percentiles, (x - p_low) / (p_high - p_low), and
inverts that with the same image's statistics after the network. The format's `scale_range` preprocessing
expresses the forward step, but no postprocessing step rescales an output by percentiles of the *input*,
so the inverse, and with it the forward step, live here. A dataset z-score (`meanstd`) is a fixed linear
map both ways, which the format expresses; then this module passes values through unchanged.
"""

import torch
from torch import nn

SUBSAMPLE = 1 << 22  # training.data.normalization: percentiles of larger images come from a strided subsample
EPS = 1e-6


class NormalizedDenoiser(nn.Module):
    """(batch, 1, y, x) raw image -> denoised image in the same units, as `w2s predict` computes it."""

    def __init__(self, net: nn.Module, percentile: bool, low: float = 1.0, high: float = 99.8):
        super().__init__()
        self.net = net
        self.percentile = percentile
        self.low = low / 100.0
        self.high = high / 100.0
        self.subsample = SUBSAMPLE  # attributes, not globals: TorchScript reads no module-level numbers
        self.eps = EPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.percentile:
            return self.net(x)
        offsets, scales = [], []
        for index in range(x.shape[0]):
            offset, scale = self.stats(x[index])
            offsets.append(offset)
            scales.append(scale)
        offset = torch.stack(offsets).reshape(-1, 1, 1, 1)
        scale = torch.stack(scales).reshape(-1, 1, 1, 1)
        return self.net((x - offset) / scale) * scale + offset

    def stats(self, image: torch.Tensor):
        """(offset, scale) of one image, as training.data.normalization.Normalization.stats computes them."""
        sample = image.reshape(-1).float()
        if sample.numel() > self.subsample:
            sample = sample[:: sample.numel() // self.subsample + 1]
        quantiles = torch.quantile(sample.double(), torch.tensor([self.low, self.high], dtype=torch.float64))
        low = quantiles[0]
        scale = torch.maximum(quantiles[1] - low, self.eps * torch.clamp(low.abs(), min=1.0))
        return low.float(), scale.float()
