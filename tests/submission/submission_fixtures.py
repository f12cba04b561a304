"""Tiny packaged models and challenge-style input folders for the submission tests (no container needed).

Not a conftest.py: pytest imports every conftest.py as `conftest`, and other tests import tests/conftest.py
under that name. Test modules import from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from training.checkpoint import save_checkpoint
from training.config import TrainConfig, UNetConfig
from training.data.normalization import Normalization
from training.model import UNet


def save_tiny_checkpoint(path: Path, run_id: str = "0123456789abcdef", seed: int = 0) -> Path:
    """A checkpoint in the trainer's format around a tiny random U-Net (depth 2, 4 channels)."""
    import torch

    torch.manual_seed(seed)
    config = TrainConfig(model=UNetConfig(depth=2, base_channels=4))
    model = UNet(config.model)
    with torch.no_grad():  # a visible, deterministic correction, so outputs differ from inputs
        model.head.bias.fill_(0.05)
    save_checkpoint(path, {
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.to_dict(),
        "normalization": Normalization().to_dict(),
        "noise_level": "avg1",
        "data_layout": "raw",
        "data_fingerprint": "f" * 16,
        "code_version": "test-code",
        "epoch": 1,
        "best_metrics": {"val_psnr": 30.5, "val_si_psnr": 31.0, "val_ssim": 0.8},
        "best_epoch": 1,
        "mlflow_run_id": run_id,
    })
    return path


def write_case(input_root: Path, name: str, array: np.ndarray, track: str = "unstructured") -> Path:
    path = input_root / "images" / f"image-stack-{track}-noise" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def stack(shape: tuple[int, ...], dtype=np.uint16, low: float = 100, high: float = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (low + (high - low) * rng.random(shape)).astype(dtype)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    """A model folder as `w2s package` writes it."""
    from submission.package import package_model

    root = tmp_path_factory.mktemp("packaged")
    checkpoint = save_tiny_checkpoint(root / "run" / "best.pt")
    package_model(checkpoint, root / "model")
    return root / "model"
