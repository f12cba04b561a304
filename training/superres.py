"""What is specific to `--task jdsr` (joint denoising and 2x super-resolution, widefield -> SIM) besides the
model's 2x head (training/model.py) and the 2x patch pairing (training/data/sampler.py).

The input and the target do not share a pixel grid, so the noisy input is scored, displayed and used as a
baseline after bicubic upsampling to the target's grid (input pixel y covers target pixels 2y and 2y + 1).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample(image: np.ndarray, scale: int = 2) -> np.ndarray:
    """Bicubic upsampling of a 2-D image by `scale` (pixel centres as in the 2x patch pairing), float32."""
    image = np.asarray(image, dtype=np.float32)
    if scale == 1:
        return image
    tensor = torch.from_numpy(np.array(image, copy=True))[None, None]
    return F.interpolate(tensor, scale_factor=float(scale), mode="bicubic", align_corners=False)[0, 0].numpy()


def on_target_grid(noisy: np.ndarray, clean: np.ndarray | None) -> np.ndarray:
    """The noisy input on its target's pixel grid: as it is for denoising, upsampled for a 2x target."""
    noisy = np.asarray(noisy, dtype=np.float32)
    if clean is None or clean.shape == noisy.shape:
        return noisy
    return upsample(noisy, clean.shape[0] // noisy.shape[0])
