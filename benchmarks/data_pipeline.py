"""2. Data pipeline from the raw W2S layout: the harness's loader against np.load-ing a stack per sample.

Synthetic stacks in the raw layout (`ImageFFF/wf_channel0.npy`, frames x size x size uint16, full size by
default: 400 x 512 x 512, 200 MB each) are written to a temporary folder. The harness streams each stack
once into cached noise levels (timed separately: a one-off cost), then `PatchSampler` crops batches from
the cached images. The original approach loads the whole stack for every sample and averages its frames
for the target. Both read from the page cache (the stacks were just written), which favours the original.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.throughput import TrainingLoop
from training.config import TrainConfig
from training.data.layouts import discover_pairs, load_pairs
from training.data.normalization import fit_normalization
from training.data.raw import AVG1_FRAME
from training.data.sampler import PatchSampler
from training.data.synthetic import SyntheticSpec, fluorescence_scene, image_stack

CHUNK = 16


def write_raw_stacks(root: Path, fovs: int, frames: int, size: int, progress: bool = True) -> list[Path]:
    """W2S raw layout with the demo data's cell images and noise model, written frame chunk by chunk."""
    spec = SyntheticSpec(size=size, frames=CHUNK)
    paths = []
    for fov in tqdm(range(1, fovs + 1), desc="writing synthetic raw stacks", unit="stack", disable=not progress):
        rng = np.random.default_rng([spec.seed, fov])
        clean = fluorescence_scene(rng, spec)[0]
        path = root / f"Image{fov:03d}" / "wf_channel0.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(frames, size, size))
        for start in range(0, frames, CHUNK):
            count = min(CHUNK, frames - start)
            stack[start:start + count] = image_stack(rng, clean, dataclasses.replace(spec, frames=count))
        stack.flush()
        del stack
        paths.append(path)
    return paths


def original_sample(paths: list[Path], patch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (noisy, clean) patch the way the original project got it: np.load the whole stack, then average."""
    stack = np.load(paths[int(rng.integers(len(paths)))])
    noisy = stack[min(AVG1_FRAME, len(stack) - 1)].astype(np.float32)
    clean = stack.mean(axis=0, dtype=np.float32)
    top, left = (int(rng.integers(n - patch_size + 1)) for n in noisy.shape)
    return noisy[top:top + patch_size, left:left + patch_size], clean[top:top + patch_size, left:left + patch_size]


def run(workdir: Path, fovs: int, frames: int, size: int, patch_size: int, batch_size: int, original_batches: int,
        harness_batches: int, train_steps: int, progress: bool = True) -> dict[str, Any]:
    paths = write_raw_stacks(workdir / "raw", fovs, frames, size, progress)
    config = TrainConfig(patch_size=patch_size, batch_size=batch_size)
    start = time.perf_counter()
    _, sources = discover_pairs(workdir / "raw", "raw", config.noise_level, str(workdir / "cache"), progress)
    cache_build = time.perf_counter() - start
    pairs = load_pairs(sources)
    normalization = fit_normalization(config.normalization, config.percentiles, "input", [])
    sampler = PatchSampler(pairs, normalization, patch_size, batch_size, True, np.random.default_rng(0))
    sampler.sample()
    harness = []
    for _ in range(harness_batches):
        t0 = time.perf_counter()
        sampler.sample()
        harness.append(time.perf_counter() - t0)

    rng = np.random.default_rng(0)
    original = []
    for _ in tqdm(range(original_batches), desc="original loader (np.load per sample)", unit="batch",
                  disable=not progress):
        t0 = time.perf_counter()
        for _ in range(batch_size):
            original_sample(paths, patch_size, rng)
        original.append(time.perf_counter() - t0)

    # steady state of training on these data: the default model's loop with the raw-cache sampler
    loop = TrainingLoop("default", patch_size, batch_size)
    loop.sampler = sampler
    loop.step(record=False)
    for _ in range(train_steps):
        loop.step()
    data_s, step_s = statistics.median(loop.data_times), statistics.median(loop.step_times)
    harness_s, original_s = statistics.median(harness), statistics.median(original)
    return {"stacks": fovs, "stack_shape": [frames, size, size], "stack_mb": frames * size * size * 2 / 1e6,
            "patch_size": patch_size, "batch_size": batch_size,
            "cache_build_s_per_stack": cache_build / fovs,
            "harness_batch_s": harness_s, "original_batch_s": original_s,
            "speedup_harness_over_original": original_s / harness_s,
            "train_step_s": step_s, "train_data_s": data_s, "data_percent_of_step": 100 * data_s / step_s,
            "harness_batches_timed": harness_batches, "original_batches_timed": original_batches,
            "train_steps_timed": train_steps, "torch_threads": torch.get_num_threads()}
