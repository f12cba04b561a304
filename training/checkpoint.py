"""One checkpoint file: weights, config, normalization, data identity and code version.

Saved with plain tensors and Python builtins only, so it loads with `torch.load(weights_only=True)`:
a checkpoint from the internet cannot run code on the machine that opens it.
"""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.data.normalization import Normalization
from training.errors import UserError, first_line
from training.io import write_bytes
from training.model import UNet, to_device

FORMAT = "w2s-checkpoint/1"
REQUIRED = {"model_state": dict, "config": dict, "normalization": dict}


@dataclass
class LoadedModel:
    model: UNet
    config: TrainConfig
    normalization: Normalization
    checkpoint: dict[str, Any]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never a torn file.

    Serialized in memory first, so a full disk fails as a plain OSError (one-line error), not deep in torch."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_bytes(path, buffer.getbuffer())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is reported below
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"unsupported GLOBAL ([^\s]+)", text, flags=re.IGNORECASE)
        if found:  # the guard at work: the pickle names a function or class to call
            raise UserError(f"{path}: refused: the file's pickle references code ({found.group(1).rstrip('.')}); a w2s "
                            f"checkpoint holds only tensors and plain values (torch.load(weights_only=True))") from None
        detail = re.search(r"(Unsupported operand \d+)", text) or re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        raise UserError(f"{path}: not a loadable w2s checkpoint: torch.load(weights_only=True) refused its pickle "
                        f"({detail.group(1).strip() if detail else first_line(exc)})") from None
    except Exception as exc:
        raise UserError(f"{path}: not a loadable w2s checkpoint ({first_line(exc)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a w2s checkpoint (missing format '{FORMAT}')")
    for key, kind in REQUIRED.items():
        if not isinstance(checkpoint.get(key), kind):
            raise UserError(f"{path}: incomplete w2s checkpoint ('{key}' is missing or not a {kind.__name__})")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the trained U-Net and its normalization from a checkpoint, ready for inference."""
    checkpoint = read_checkpoint(path)
    config = TrainConfig.from_dict(checkpoint["config"], source=str(path))
    try:
        normalization = Normalization.from_dict(checkpoint["normalization"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: invalid normalization in the checkpoint ({first_line(exc)})") from None
    model = to_device(load_weights(UNet(config.model), checkpoint, path), device).eval()
    return LoadedModel(model, config, normalization, checkpoint)


def load_weights(model: torch.nn.Module, checkpoint: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """Put a checkpoint's weights into `model`; a mismatch is a one-line error naming the file."""
    try:
        model.load_state_dict(checkpoint["model_state"])
    except (RuntimeError, TypeError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]  # torch: "Error(s) in ...:"
        raise UserError(f"{path}: weights do not fit the model config ({detail[:200]})") from None
    return model



def code_version() -> str:
    """Git commit of the code that trained the model (with -dirty for uncommitted changes), else the version."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "w2s-denoise " + version("w2s-denoise")
        except PackageNotFoundError:
            return "unknown"


__all__ = ["FORMAT", "LoadedModel", "code_version", "load_model", "read_checkpoint", "save_checkpoint"]
