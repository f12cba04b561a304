"""3. Inference speed (whole image and tiled) and peak memory of tiled prediction on a large image.

The default model with random weights (speed does not depend on the values of the weights), on images with
a W2S-like intensity range. Peak RSS is measured in a fresh subprocess (`python -m benchmarks.inference
SIZE`), which reports its own resident set before predicting and its peak after. Linux's VmHWM is read
(`ru_maxrss` survives exec, so a child started by a large parent would report the parent's peak).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import median_seconds
from training.config import TrainConfig
from training.data.normalization import fit_normalization
from training.model import UNet, to_device
from training.predict import DEFAULT_BATCH_SIZE, DEFAULT_TILE, predict_image, tiled_predict


def default_model() -> tuple[UNet, Any]:
    config = TrainConfig()
    torch.manual_seed(0)
    model = to_device(UNet(config.model), "cpu").eval()  # as training.checkpoint.load_model builds it
    return model, fit_normalization(config.normalization, config.percentiles, "input", [])


def sample_image(size: int) -> np.ndarray:
    return np.random.default_rng(size).uniform(100, 400, (size, size)).astype(np.float32)


def run(sizes: list[int], rss_size: int, repeats: dict[int, int]) -> dict[str, Any]:
    model, normalization = default_model()
    out: dict[str, Any] = {"tile": DEFAULT_TILE, "tile_batch": DEFAULT_BATCH_SIZE, "sizes": {}}
    for size in sizes:
        image = sample_image(size)
        n = repeats.get(size, 1)
        whole = median_seconds(lambda: predict_image(model, normalization, image), n)
        tiled = median_seconds(lambda: tiled_predict(model, normalization, image), n)
        out["sizes"][str(size)] = {"repeats": n, "whole_s": whole, "tiled_s": tiled,
                                   "whole_mpx_per_s": size * size / whole / 1e6,
                                   "tiled_mpx_per_s": size * size / tiled / 1e6}
    out["peak_rss"] = peak_rss(rss_size)
    return out


def peak_rss(size: int) -> dict[str, Any]:
    """Tiled prediction of a size x size image in a fresh Python process; its peak resident memory."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.inference", str(size)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"peak-RSS subprocess failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_in_this_process(size: int) -> dict[str, Any]:
    model, normalization = default_model()
    image = sample_image(size)
    before = _memory_mb("VmRSS")
    start = time.perf_counter()
    tiled_predict(model, normalization, image)
    seconds = time.perf_counter() - start
    peak = _memory_mb("VmHWM")
    return {"size": size, "mode": "tiled", "peak_rss_mb": peak, "rss_before_predict_mb": before,
            "image_mb": image.nbytes / 2**20, "seconds": seconds, "mpx_per_s": size * size / seconds / 1e6}


def _memory_mb(field: str) -> float:
    """Current (VmRSS) or peak (VmHWM) resident memory of this process, from /proc; else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


if __name__ == "__main__":
    print(json.dumps(_measure_in_this_process(int(sys.argv[1]))))
