"""5. GPU figures, with the CPU figures of the same commit beside them (`python -m benchmarks --only gpu`).

Training throughput of the default model on CUDA in float32 and with the trainer's mixed precision
(float16 autocast + GradScaler, `use_amp`), at the recipe's batch (8 x 128^2) and a GPU-sized batch; the
same step on this machine's CPU in float32 and bf16 autocast (`cpu_bf16`). Inference: the container's own
path (`submission.inference.denoise`, tiled, float16 autocast on CUDA) on a (3, 512, 512) stack like the
challenge's W2S input. Skipped, with the reason, where there is no CUDA device.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch

from benchmarks.common import median_seconds
from benchmarks.inference import default_model
from benchmarks.throughput import TrainingLoop
from training.checkpoint import LoadedModel
from training.config import TrainConfig
from training.errors import UserError


def training_throughput(device: torch.device, batch_size: int, patch_size: int, steps: int, *,
                        use_amp: bool = False, cpu_bf16: bool = False, warmup: int = 3) -> dict[str, float]:
    """Median patches/s of the trainer's own step on `device` (data sampled on the CPU, as in training)."""
    loop = TrainingLoop("default", patch_size, batch_size, device=str(device), use_amp=use_amp, cpu_bf16=cpu_bf16)
    for _ in range(warmup):
        loop.step(record=False)
    for _ in range(steps):
        loop.step()
    step_s = statistics.median(loop.step_times)
    return {"batch_size": batch_size, "patch_size": patch_size, "steps": steps, "median_step_s": step_s,
            "patches_per_s": batch_size / step_s, "mpx_per_s": batch_size * patch_size**2 / step_s / 1e6}


def stack_inference(device: torch.device, repeats: int, shape: tuple[int, int, int] = (3, 512, 512)) -> dict:
    """Seconds for the container's prediction of one challenge-shaped stack (median of `repeats`)."""
    from submission.inference import denoise

    model, normalization = default_model()
    loaded = LoadedModel(model.to(device), TrainConfig(), normalization, checkpoint={})  # as load_model returns it

    image = np.random.default_rng(0).uniform(93, 463, shape).astype(np.float32)

    def once():
        denoise(loaded, image, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once()  # warm-up: cuDNN autotuning and allocator
    seconds = median_seconds(once, repeats)
    return {"shape": list(shape), "repeats": repeats, "seconds": seconds,
            "mpx_per_s": float(np.prod(shape)) / seconds / 1e6}


def run(cuda_batches: list[int], patch_size: int, cuda_steps: int, cpu_steps: int, repeats: int) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise UserError("no CUDA device on this machine")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "training": {}, "inference": {}}
    for batch in cuda_batches:
        for amp in (False, True):
            out["training"][f"cuda_b{batch}_{'amp' if amp else 'fp32'}"] = training_throughput(
                cuda, batch, patch_size, cuda_steps, use_amp=amp)
    for bf16 in (False, True):
        out["training"][f"cpu_b{cuda_batches[0]}_{'bf16' if bf16 else 'fp32'}"] = training_throughput(
            cpu, cuda_batches[0], patch_size, cpu_steps, cpu_bf16=bf16, warmup=1)
    out["inference"]["cuda"] = stack_inference(cuda, repeats)
    out["inference"]["cpu"] = stack_inference(cpu, max(1, repeats // 5))
    return out
