"""1. Training throughput: the default model against the `seed` preset, same patches and batch, same loop;
and the default architecture at CAREamics' default CARE size (depth 2, 32 filters), the model a user would
otherwise train, to compare per-patch speed at (nearly) equal size with CAREamics' own measured figure.

Both run the trainer's own step (`training.trainer.train_step`: forward, L1 loss, backward, AdamW) on
batches from the harness's `PatchSampler`. Steps of the two models are interleaved round by round, so a
burst of load from other processes hits both alike. Reported: each model's median step time, and the
median over rounds of the ratio within a round (robust to load that drifts between rounds).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from benchmarks.common import synthetic_sampler
from training.config import TrainConfig
from training.model import UNet, count_parameters, to_device
from training.trainer import train_step


class TrainingLoop:
    """One model, optimizer and sampler, configured as `w2s train` would configure them: on the CPU by
    default, or on `device` with the trainer's precision switches (`use_amp` on CUDA, `cpu_bf16` on CPU)."""

    def __init__(self, preset: str, patch_size: int, batch_size: int, seed: int = 0, model: dict | None = None,
                 device: str = "cpu", use_amp: bool = False, cpu_bf16: bool = False):
        self.config = TrainConfig.from_dict({"preset": preset, "patch_size": patch_size, "batch_size": batch_size,
                                             "device": device, **({"model": model} if model else {})}).validate()
        self.device, self.use_amp, self.cpu_bf16 = torch.device(device), use_amp, cpu_bf16
        torch.manual_seed(seed)
        self.model = to_device(UNet(self.config.model), self.device)  # as the trainer sets it up
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.loss_fn = torch.nn.L1Loss()
        self.sampler = synthetic_sampler(patch_size, batch_size, seed)
        self.step_times: list[float] = []
        self.data_times: list[float] = []

    def step(self, record: bool = True) -> None:
        start = time.perf_counter()
        x, y = (torch.from_numpy(a).to(self.device, non_blocking=True) for a in self.sampler.sample())
        loaded = time.perf_counter()
        train_step(self.model, x, y, self.optimizer, self.scaler, self.loss_fn, self.use_amp, self.cpu_bf16)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # CUDA returns before the step is done
        if record:
            self.data_times.append(loaded - start)
            self.step_times.append(time.perf_counter() - start)


def run(patch_size: int, batch_size: int, rounds: int, steps_per_round: int, warmup: int = 1) -> dict[str, Any]:
    loops = {preset: TrainingLoop(preset, patch_size, batch_size) for preset in ("default", "seed")}
    loops["careamics_size"] = TrainingLoop("default", patch_size, batch_size, model={"depth": 2, "base_channels": 32})
    for loop in loops.values():
        for _ in range(warmup):
            loop.step(record=False)
    for _ in range(rounds):
        for loop in loops.values():
            for _ in range(steps_per_round):
                loop.step()
    pixels = patch_size * patch_size
    out: dict[str, Any] = {"patch_size": patch_size, "batch_size": batch_size, "timed_steps": rounds * steps_per_round}
    for name, loop in loops.items():
        step = statistics.median(loop.step_times)
        out[name] = {"parameters": count_parameters(loop.model), "median_step_s": step,
                       "patches_per_s": batch_size / step, "mpx_per_s": batch_size * pixels / step / 1e6,
                       "step_times_s": loop.step_times}
    out["speedup_default_over_seed"] = out["default"]["patches_per_s"] / out["seed"]["patches_per_s"]
    seed, default = loops["seed"].step_times, loops["default"].step_times
    per_round = [sum(seed[i:i + steps_per_round]) / sum(default[i:i + steps_per_round])
                 for i in range(0, rounds * steps_per_round, steps_per_round)]
    out["speedup_paired_by_round"] = statistics.median(per_round)
    out["speedup_per_round"] = per_round
    return out
