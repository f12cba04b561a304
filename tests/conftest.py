"""Shared fixtures: tiny datasets in every on-disk layout, CLI helpers, and one shared tiny training run.

Everything is written under pytest's tmp directories; no test touches the repository's ./runs, ./mlflow.db
or data/. Datasets are a few 32..48 px images so the whole fast suite runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent  # the venv that runs pytest also holds the `w2s` and `mlflow` scripts
W2S_BIN = BIN_DIR / "w2s"
MLFLOW_BIN = BIN_DIR / "mlflow"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # ../shared/data beside the repository (see its README)


# --------------------------------------------------------------------------------------------- tiny datasets


def scene(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth, structured image in [0, 1] (blurred noise): something a denoiser can learn."""
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(rng.random(shape), 2.0)
    return (image - image.min()) / (image.max() - image.min() + 1e-12)


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_8bit(root: Path, fovs: dict[str, tuple[int, ...]] | None = None, channels: int = 2,
               shape: tuple[int, int] = (32, 32), levels: tuple[str, ...] = ("avg1",), under_data: bool = False,
               seed: int = 0) -> Path:
    """W2S 8-bit release: ROOT[/data]/{train,test}/avgN/FFF_c.png (uint8), targets in avg400."""
    fovs = {"train": (1, 2, 3, 71), "test": (81,)} if fovs is None else fovs
    rng = np.random.default_rng(seed)
    base = root / "data" if under_data else root
    for split, fov_list in fovs.items():
        for fov in fov_list:
            for channel in range(channels):
                clean = scene(rng, shape) * 255
                _save_png(base / split / "avg400" / f"{fov:03d}_{channel}.png", clean.astype(np.uint8))
                for level in levels:
                    noisy = np.clip(clean + rng.normal(0, 30, shape), 0, 255).astype(np.uint8)
                    _save_png(base / split / level / f"{fov:03d}_{channel}.png", noisy)
    return root


def write_normalized(root: Path, fovs: tuple[int, ...] = (1, 2, 3, 71, 81), channels: int = 2,
                     shape: tuple[int, int] = (32, 32), levels: tuple[str, ...] = ("avg1",), nested: bool = True,
                     seed: int = 0) -> Path:
    """W2S z-scored release: ROOT/normalized/avgN/FFF_c.npy (float32); nested=False puts avgN/ in ROOT."""
    rng = np.random.default_rng(seed)
    base = root / "normalized" if nested else root
    for fov in fovs:
        for channel in range(channels):
            clean = ((100 + 200 * scene(rng, shape)) - 154.5) / 66.0
            for level, image in (("avg400", clean), *((lv, clean + rng.normal(0, 0.5, shape)) for lv in levels)):
                path = base / level / f"{fov:03d}_{channel}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, image.astype(np.float32))
    return root


def raw_stack(rng: np.random.Generator, frames: int, shape: tuple[int, int]) -> np.ndarray:
    """(frames, Y, X) uint16 counts around 100..400 with Poisson noise, like W2S's wf_channelC.npy."""
    clean = 100 + 300 * scene(rng, shape)
    return rng.poisson(np.broadcast_to(clean, (frames, *shape))).astype(np.uint16)


def write_raw(root: Path, fovs: tuple[int, ...] = (1, 2, 71), channels: int = 1, frames: int = 5,
              shape: tuple[int, int] = (16, 16), seed: int = 0) -> dict[tuple[int, int], np.ndarray]:
    """W2S raw release: ROOT/ImageFFF/wf_channelC.npy; returns {(fov, channel): stack}."""
    rng = np.random.default_rng(seed)
    stacks = {}
    for fov in fovs:
        for channel in range(channels):
            stack = raw_stack(rng, frames, shape)
            path = root / f"Image{fov:03d}" / f"wf_channel{channel}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, stack)
            stacks[fov, channel] = stack
    return stacks


def write_paired(root: Path, shapes: dict[str, tuple[int, ...]], dtype=np.float32, seed: int = 0,
                 suffix: str = ".tif") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Generic layout: ROOT/inputs/NAME.tif + ROOT/targets/NAME.tif; returns {name: (input, target)}."""
    import tifffile

    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in shapes.items():
        target = (100 + 300 * rng.random(shape)).astype(dtype)
        noisy = (target + rng.normal(0, 20, shape)).astype(dtype)
        for folder, array in (("inputs", noisy), ("targets", target)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / folder / f"{name}{suffix}", array)
        arrays[name] = (noisy, target)
    return arrays


@pytest.fixture
def make_8bit() -> Callable[..., Path]:
    return write_8bit


@pytest.fixture
def make_normalized() -> Callable[..., Path]:
    return write_normalized


@pytest.fixture
def make_raw() -> Callable[..., dict]:
    return write_raw


@pytest.fixture
def make_paired() -> Callable[..., dict]:
    return write_paired


# ----------------------------------------------------------------------------------------------- CLI helpers


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    """No test may inherit a tracking server from the environment or leak an active MLflow run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run with cwd = tmp_path (the demo data default `data/demo-w2s` and MLflow's ./mlruns are relative)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_train_args(tmp: Path, data: Path | str | None, *extra: str, epochs: int = 1, steps: int = 2) -> list[str]:
    """`w2s train` arguments for a seconds-long CPU run whose every output goes under `tmp`."""
    args = ["train"]
    if data is not None:
        args += ["--data", str(data)]
    return args + [
        "--epochs", str(epochs), "--steps-per-epoch", str(steps), "--batch-size", "2", "--patch-size", "16",
        "--base-channels", "4", "--depth", "2", "--no-log-model", "--device", "cpu", "--quiet",
        "--out-dir", str(tmp / "runs"), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
        "--cache-dir", str(tmp / "cache"), *extra,
    ]


@pytest.fixture
def train_args() -> Callable[..., list[str]]:
    return tiny_train_args


def invoke(args: list[str]):
    """Run the `w2s` click group in-process (one torch/mlflow import for the whole session)."""
    from click.testing import CliRunner

    from w2s.cli import cli

    return CliRunner().invoke(cli, args, prog_name="w2s")


@pytest.fixture
def run_cli() -> Callable[[list[str]], object]:
    return invoke


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def written_outputs(tmp: Path) -> list[Path]:
    """Anything a training run would leave behind: run folders, checkpoints, tracking stores."""
    found = [p for p in tmp.rglob("*") if p.suffix == ".pt" or p.name in ("mlflow.db", "mlruns", "latest")]
    runs = tmp / "runs"
    if runs.exists():
        found += list(runs.iterdir()) or [runs]
    return found


# -------------------------------------------------------------------------- one shared tiny training session


@dataclass
class TinyTraining:
    """Three CLI runs on one tiny 8-bit dataset and one SQLite store:

    - `full`: 2 epochs straight through;
    - `first`: the same config for 1 epoch (its last.pt is copied to `first_epoch_last`), then
    - resumed with `--resume <run dir> --epochs 2` into the same run folder and MLflow run.
    """

    root: Path
    data: Path
    tracking_uri: str
    full_dir: Path
    full_run_id: str
    full_output: str
    first_dir: Path
    first_run_id: str
    first_epoch_last: Path
    resumed_run_id: str
    resume_output: str
    epochs: int = 2
    steps: int = 3
    seed: int = 7
    lr: float = 0.003


def _run_dir_from(output: str) -> Path:
    line = next(line for line in output.splitlines() if line.startswith("best checkpoint:"))
    return Path(line.split(":", 1)[1].strip()).parent


def _run_id_from(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("MLflow run:"))
    return line.split(":", 1)[1].split()[0]


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory) -> TinyTraining:
    root = tmp_path_factory.mktemp("tiny_training")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        data = write_8bit(root / "data", fovs={"train": (1, 2, 3, 71), "test": (81,)}, shape=(40, 48))
        common = ["--val-fovs", "071", "--seed", "7", "--lr", "0.003",
                  "--set", "schedule=constant", "--set", "warmup_steps=1", "--set", "panel_every=1"]

        full = invoke(tiny_train_args(root, data, *common, "--run-name", "full", epochs=2, steps=3))
        assert full.exit_code == 0, full.output
        first = invoke(tiny_train_args(root, data, *common, "--run-name", "first", epochs=1, steps=3))
        assert first.exit_code == 0, first.output
        first_dir = _run_dir_from(first.output)
        first_epoch_last = root / "first_epoch_last.pt"
        shutil.copy2(first_dir / "last.pt", first_epoch_last)
        resumed = invoke(["train", "--resume", str(first_dir), "--epochs", "2", "--quiet"])
        assert resumed.exit_code == 0, resumed.output
    return TinyTraining(root=root, data=data, tracking_uri=f"sqlite:///{root}/mlflow.db",
                        full_dir=_run_dir_from(full.output), full_run_id=_run_id_from(full.output),
                        full_output=full.output, first_dir=first_dir, first_run_id=_run_id_from(first.output),
                        first_epoch_last=first_epoch_last, resumed_run_id=_run_id_from(resumed.output),
                        resume_output=resumed.output)


def pytest_report_header(config):
    return f"w2s tests: repo {REPO_ROOT}, scripts from {BIN_DIR}, cpu cores {os.cpu_count()}"
