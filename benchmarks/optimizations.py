"""The CPU optimizations tried for docs/performance.md, each against the plain training loop, interleaved.

`python -m benchmarks.optimizations [--only NAME,...] [--rounds N]` times the default model's training step
(batch 8 of 128^2, L1, AdamW) with one change at a time: thread count, channels_last, bf16 autocast,
torch.compile, a DataLoader worker instead of in-process sampling, and other batch and patch sizes; plus
bf16 and channels_last for whole-image inference. Baseline and variant alternate step by step (round
robin), so load from other processes falls on both; medians of the per-step times are reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable

import torch

from benchmarks.common import machine, report_path, save_report, synthetic_sampler
from benchmarks.inference import default_model, sample_image
from training.config import TrainConfig
from training.model import UNet
from training.predict import predict_image


@dataclass(frozen=True)
class Variant:
    name: str = "baseline"
    threads: int = 0  # 0 = torch's default
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    loader_workers: int = 0
    patch_size: int = 128
    batch_size: int = 8


class Loop:
    """A training loop with one variant applied; `step()` runs one optimisation step."""

    def __init__(self, variant: Variant):
        self.variant = variant
        torch.manual_seed(0)
        self.model = UNet(TrainConfig().model)
        if variant.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if variant.compile else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        sampler = synthetic_sampler(variant.patch_size, variant.batch_size)
        if variant.loader_workers:
            loader = torch.utils.data.DataLoader(_Batches(sampler), batch_size=None,
                                                 num_workers=variant.loader_workers, persistent_workers=True)
            batches = iter(loader)
            self.next_batch = lambda: next(batches)
        else:
            self.next_batch = lambda: tuple(torch.from_numpy(a) for a in sampler.sample())
        self.times: list[float] = []
        self.first_step_s = self._timed()  # includes compilation for torch.compile

    def _timed(self) -> float:
        threads = torch.get_num_threads()
        if self.variant.threads:
            torch.set_num_threads(self.variant.threads)
        start = time.perf_counter()
        x, y = self.next_batch()
        if self.variant.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant.bf16):
            out = self.net(x)
        loss = torch.nn.functional.l1_loss(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        seconds = time.perf_counter() - start
        torch.set_num_threads(threads)
        return seconds

    def step(self) -> None:
        self.times.append(self._timed())


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        while True:
            yield tuple(torch.from_numpy(a) for a in self.sampler.sample())


BASE = Variant()
TRAINING = {
    "threads": [replace(BASE, name="1 thread", threads=1), replace(BASE, name="2 threads", threads=2),
                replace(BASE, name="4 threads", threads=4)],
    "channels_last": [replace(BASE, name="channels_last", channels_last=True)],
    "bf16": [replace(BASE, name="bf16 autocast", bf16=True)],
    "compile": [replace(BASE, name="torch.compile", compile=True)],
    "loader": [replace(BASE, name="DataLoader, 1 worker", loader_workers=1)],
    "batch_patch": [replace(BASE, name="batch 16 x 128^2", batch_size=16),
                    replace(BASE, name="batch 2 x 256^2", batch_size=2, patch_size=256),
                    replace(BASE, name="batch 32 x 64^2", batch_size=32, patch_size=64)],
}


def compare_training(variants: list[Variant], rounds: int, steps: int) -> list[dict[str, Any]]:
    loops = [Loop(BASE)] + [Loop(v) for v in variants]
    for _ in range(rounds):
        for loop in loops:
            for _ in range(steps):
                loop.step()
    base = statistics.median(loops[0].times)
    base_px = BASE.batch_size * BASE.patch_size**2 / base
    rows = []
    for loop in loops:
        v, step = loop.variant, statistics.median(loop.times)
        px = v.batch_size * v.patch_size**2 / step
        rows.append({"variant": v.name, "median_step_s": step, "patches_per_s": v.batch_size / step,
                     "mpx_per_s": px / 1e6, "speedup_vs_baseline": px / base_px, "first_step_s": loop.first_step_s,
                     "baseline_median_step_s": base, "steps": len(loop.times)})
    return rows


def compare_inference(rounds: int, size: int = 512) -> list[dict[str, Any]]:
    fast, normalization = default_model()  # channels_last, as load_model gives it on CPU
    image = sample_image(size)
    model = UNet(fast.config).eval()  # the baseline: plain NCHW memory
    model.load_state_dict(fast.state_dict())

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predict_image(model, normalization, image)

    cases: dict[str, Callable[[], Any]] = {"baseline": lambda: predict_image(model, normalization, image),
                                           "bf16 autocast": bf16,
                                           "channels_last": lambda: predict_image(fast, normalization, image)}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm up
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["baseline"])
    return [{"variant": f"inference {size}^2: {name}", "median_s": statistics.median(t),
             "mpx_per_s": size * size / statistics.median(t) / 1e6, "speedup_vs_baseline": base / statistics.median(t)}
            for name, t in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.optimizations", description=__doc__)
    parser.add_argument("--only", default=",".join([*TRAINING, "inference"]))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"started": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                              "rounds": args.rounds, "steps_per_round": args.steps, "experiments": {}}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"[optimizations] {name} ...", file=sys.stderr, flush=True)
        rows = compare_inference(args.rounds * args.steps) if name == "inference" else \
            compare_training(TRAINING[name], args.rounds, args.steps)
        report["experiments"][name] = rows
        for row in rows:
            print(f"{name:<12} {row['variant']:<28} {row['mpx_per_s']:8.4f} Mpx/s  x{row['speedup_vs_baseline']:.2f}",
                  flush=True)
    save_report(report, report_path(args.out, "optimizations"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
