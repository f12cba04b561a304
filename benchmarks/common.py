"""Timing, machine facts and the printed table shared by every benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from training.config import TrainConfig
from training.data.layouts import ImagePair, PairSource
from training.data.normalization import fit_normalization
from training.data.sampler import PatchSampler
from training.io import write_text
from training.trainer import native_cpu_bf16


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls: robust to the bursts of load a shared machine has."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report_path(out: str, name: str) -> Path:
    """Where a benchmark's JSON goes: `out` if given, else runs/bench/<name>-<time>.json."""
    return Path(out or Path("runs") / "bench" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.json")


def save_report(report: dict[str, Any], path: Path) -> None:
    """Write a benchmark's JSON report (atomically: never a half-written file) and say where."""
    write_text(path, json.dumps(report, indent=2))
    print(f"saved {path}")


def machine() -> dict[str, Any]:
    """What the figures were measured on, with the load average as a sign of contention."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_cpu_bf16": native_cpu_bf16(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1min": round(os.getloadavg()[0], 2)}


def synthetic_sampler(patch_size: int, batch_size: int, seed: int = 0, size: int = 512,
                      count: int = 4) -> PatchSampler:
    """The harness's sampler over a few in-memory uint16-like images, normalized as training does."""
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(count):
        clean = rng.uniform(100, 400, (size, size)).astype(np.float32)
        noisy = clean + rng.normal(0, 30, clean.shape).astype(np.float32)
        pairs.append(ImagePair(PairSource(f"synthetic_{index}", str(index), None, None, None), noisy, clean))
    defaults = TrainConfig()
    normalization = fit_normalization(defaults.normalization, defaults.percentiles, "input", [])
    return PatchSampler(pairs, normalization, patch_size, batch_size, True, rng)


@dataclass
class Table:
    """Rows of (section, item, value, unit); printed aligned and saved in the JSON."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, section: str, item: str, value: float | str | None, unit: str = "") -> None:
        if value is None:
            text = "n/a"
        elif isinstance(value, str):
            text = value
        else:
            text = f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"  # 4 digits: dB to 0.01
        self.rows.append((section, item, text, unit))

    def render(self) -> str:
        widths = [max(len(row[i]) for row in self.rows + [("section", "measure", "value", "unit")]) for i in range(4)]
        lines = []
        previous = None
        for section, item, value, unit in [("section", "measure", "value", "unit")] + self.rows:
            shown = section if section != previous else ""
            previous = section
            lines.append(f"{shown:<{widths[0]}}  {item:<{widths[1]}}  {value:>{widths[2]}}  {unit}".rstrip())
            if section == "section":
                lines.append("-" * (sum(widths) + 6))
        return "\n".join(lines)
