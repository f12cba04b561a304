"""Tiny generated data, models and fixtures for the evaluation tests (seconds on a 2-core CPU).

Not a conftest.py on purpose: pytest imports every conftest.py as the module `conftest`, and tests elsewhere
do `from conftest import ...` expecting tests/conftest.py. Test modules import the fixtures from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from training.checkpoint import save_checkpoint
from training.config import TrainConfig, UNetConfig
from training.data.normalization import Normalization
from training.model import UNet

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def clean_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth blobs on a dark background, values in [0, 1]."""
    image = gaussian_filter(rng.random((size, size)) ** 8, 2.0)
    image = gaussian_filter(image, 1.0)
    return (image - image.min()) / (image.max() - image.min() + 1e-12)


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def make_w2s_8bit(root: Path, fovs=(1, 2, 3, 71, 72, 81), channels=(0, 1), size: int = 64, seed: int = 0) -> Path:
    """W2S's 8-bit layout: train/avg1/FFF_c.png (noisy) and train/avg400/FFF_c.png (clean), each stretched."""
    rng = np.random.default_rng(seed)
    for fov in fovs:
        for channel in channels:
            clean = clean_image(rng, size)
            noisy = np.clip(rng.poisson(clean * 30 + 2) / 32.0, 0, None)
            for level, image in (("avg400", clean), ("avg1", noisy)):
                stretched = (image - image.min()) / (image.max() - image.min()) * 255
                write_png(root / "train" / level / f"{fov:03d}_{channel}.png", np.round(stretched).astype(np.uint8))
    return root


def tiny_model(depth: int = 2, base_channels: int = 4, residual: bool = True, seed: int = 0) -> UNet:
    import torch

    torch.manual_seed(seed)
    return UNet(UNetConfig(depth=depth, base_channels=base_channels, residual=residual)).eval()


def save_tiny_checkpoint(path: Path, data_root: Path | None = None, model: UNet | None = None,
                         run_id: str | None = None, tracking_uri: str = "", **config_values) -> Path:
    """A checkpoint in the trainer's format (see training/trainer.py _payload) around a tiny random U-Net."""
    model = model or tiny_model()
    config = TrainConfig.from_dict({"data": str(data_root or ""), "model": vars(model.config).copy(),
                                    "tracking_uri": tracking_uri, **config_values})
    normalization = Normalization("percentile", 1.0, 99.8, target="own")
    save_checkpoint(path, {
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.to_dict(), "normalization": normalization.to_dict(), "noise_level": config.noise_level,
        "data_layout": "8bit", "data_root": str(Path(data_root).resolve()) if data_root else "",
        "data_fingerprint": "test", "split": {"train": [], "val": [], "test": []}, "code_version": "test",
        "epoch": 1, "history": [], "best_metrics": {}, "best_epoch": 1, "run_dir": str(Path(path).parent),
        "mlflow_run_id": run_id, "saved_at": "2026-01-01T00:00:00",
    })
    return path


@pytest.fixture(autouse=True)
def no_repo_mlflow(monkeypatch, tmp_path):
    """No test may reach the repository's ./mlflow.db: default MLflow to a store in the test's folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/default-mlflow.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


_SESSION: dict[str, Any] = {}  # fixtures imported into several modules still run once per session


@pytest.fixture(scope="session")
def w2s_data(tmp_path_factory) -> Path:
    """8-bit layout, 64x64: train FOVs 001-003, val 071-072, test 081 (2 channels each)."""
    if "w2s_data" not in _SESSION:
        _SESSION["w2s_data"] = make_w2s_8bit(tmp_path_factory.mktemp("w2s") / "data")
    return _SESSION["w2s_data"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, w2s_data) -> dict[str, Any]:
    """A 1-epoch, 2-step training of a tiny U-Net, logged and registered in a private MLflow store."""
    if "trained_run" in _SESSION:
        return _SESSION["trained_run"]
    from training.config import TrainConfig
    from training.trainer import train

    root = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{root}/mlflow.db"
    config = TrainConfig.from_dict({
        "data": str(w2s_data), "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 32,
        "warmup_steps": 1, "model": {"depth": 2, "base_channels": 4}, "out_dir": str(root / "runs"),
        "tracking_uri": uri, "experiment": "w2s-test", "run_name": "tiny", "registered_model": "w2s-unet",
        "device": "cpu",
    }).validate()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow puts artifacts in ./mlruns
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        result = train(config, progress=False)
    _SESSION["trained_run"] = {"result": result, "uri": uri, "root": root, "latest": root / "runs" / "latest",
                               "data": w2s_data}
    return _SESSION["trained_run"]
