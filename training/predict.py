"""Apply a trained model to an image in its original units: normalize, run the network, invert."""

from __future__ import annotations

import numpy as np
import torch

from training.data.normalization import Normalization


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict_image(model: torch.nn.Module, normalization: Normalization, image: np.ndarray,
                  device: torch.device | None = None, amp: bool = True) -> np.ndarray:
    """Denoise one 2-D image whole; the output is float32 in the input's units."""
    device = device or next(model.parameters()).device
    stats = normalization.stats(image)
    x = torch.from_numpy(normalization.normalize(image, stats))[None, None].to(device)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
        y = model(x)
    return normalization.denormalize(y.float()[0, 0].cpu().numpy(), stats)
