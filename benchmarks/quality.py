"""4. Quality per minute: validation SI-PSNR after the same wall-clock training budget, default vs seed.

Each model is trained by the harness itself (`training.trainer.train` with `max_minutes`: only training
steps count against the budget, not data loading or validation), then validated once on every image of the
validation FOVs. Runs go to a temporary MLflow store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.trainer import train


def run(data: Path, workdir: Path, minutes: float, val_fovs: str, val_max_images: int, patch_size: int,
        batch_size: int, progress: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"data": str(data), "val_fovs": val_fovs, "budget_minutes": minutes,
                           "patch_size": patch_size, "batch_size": batch_size}
    for preset in ("default", "seed"):
        config = TrainConfig.from_dict({
            "data": str(data), "preset": preset, "val_fovs": val_fovs, "val_max_images": val_max_images,
            "epochs": 1, "steps_per_epoch": 10**7, "max_minutes": minutes, "patch_size": patch_size,
            "batch_size": batch_size, "device": "cpu", "out_dir": str(workdir / "runs"),
            "run_name": f"bench-{preset}", "experiment": "w2s-bench", "log_model": False,
            "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "cache_dir": str(workdir / "cache"),
        }, source="quality benchmark").validate()
        result = train(config, progress=progress)
        last = result.history[-1]
        out[preset] = {"val_si_psnr": last["val_si_psnr"], "val_psnr": last["val_psnr"], "val_ssim": last["val_ssim"],
                       "train_minutes": last["train_minutes"], "patches_per_s": last["patches_per_s"],
                       "patches_seen": last["patches_per_s"] * last["train_minutes"] * 60,
                       "noisy_si_psnr": result.noisy_metrics["si_psnr"]}
    out["si_psnr_gain_default_over_seed_db"] = out["default"]["val_si_psnr"] - out["seed"]["val_si_psnr"]
    return out
