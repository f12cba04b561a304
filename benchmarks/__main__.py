"""`python -m benchmarks` (`make bench`): every comparison measured side by side in one run, printed as a
table and saved as JSON. `--quick` shrinks every size so the whole suite runs in well under a minute
(a smoke test, not a measurement); `--minutes` sets the quality budget (see docs/performance.md)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from training.errors import UserError

PARTS = ("throughput", "data", "inference", "quality", "gpu")
SECTIONS = dict(zip(PARTS, ("1 training", "2 data", "3 inference", "4 quality", "5 gpu")))
DEFAULT_DATA = Path("..") / "shared" / "data" / "w2s-8bit"

# full run | --quick
SIZES = {
    "throughput": ({"patch_size": 128, "batch_size": 8, "rounds": 4, "steps_per_round": 2},
                   {"patch_size": 32, "batch_size": 2, "rounds": 1, "steps_per_round": 2}),
    "data": ({"fovs": 3, "frames": 400, "size": 512, "patch_size": 128, "batch_size": 8, "original_batches": 2,
              "harness_batches": 50, "train_steps": 5},
             {"fovs": 2, "frames": 8, "size": 64, "patch_size": 32, "batch_size": 2, "original_batches": 1,
              "harness_batches": 3, "train_steps": 2}),
    "inference": ({"sizes": [512, 2048], "rss_size": 4096, "repeats": {512: 3, 2048: 1}},
                  {"sizes": [64, 128], "rss_size": 256, "repeats": {}}),
    "quality": ({"val_max_images": 0, "patch_size": 128, "batch_size": 8},
                {"val_max_images": 2, "patch_size": 32, "batch_size": 2}),
    "gpu": ({"cuda_batches": [8, 64], "patch_size": 128, "cuda_steps": 50, "cpu_steps": 6, "repeats": 10},
            {"cuda_batches": [2], "patch_size": 32, "cuda_steps": 2, "cpu_steps": 1, "repeats": 1}),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the suite works, measures little")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts ({', '.join(PARTS)})")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget per model for the quality part (default 2, --quick 0.02)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="W2S 8-bit data for the quality part")
    parser.add_argument("--val-fovs", default="071-080", help="validation FOVs of the quality part")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", default="", help="JSON file (default runs/bench/bench-<time>.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.minutes is None:
        args.minutes = 0.02 if args.quick else 2.0
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from benchmarks import common

    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = common.report_path(args.out, "bench")
    size = 1 if args.quick else 0
    progress = not args.quiet
    report: dict[str, Any] = {"quick": args.quick, "started": datetime.now().isoformat(timespec="seconds"),
                              "machine": common.machine(), "results": {}, "load_average_1min": {}}
    table = common.Table()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="w2s-bench-") as tmp:
        for part in args.parts:
            part_start = time.perf_counter()
            print(f"[bench] {part} ...", file=sys.stderr, flush=True)
            try:
                result = _run_part(part, args, SIZES[part][size], Path(tmp), progress)
            except UserError as exc:
                result = {"skipped": str(exc)}
            result["seconds"] = time.perf_counter() - part_start
            report["results"][part] = result
            report["load_average_1min"][part] = round(os.getloadavg()[0], 2)
            _add_rows(table, part, result)
    report["total_seconds"] = time.perf_counter() - start
    text = table.render()
    print(text)
    print(f"\n{report['machine']['cpus']} CPUs, torch {report['machine']['torch']} with "
          f"{report['machine']['torch_threads']} threads; load average (1 min) after each part: "
          f"{report['load_average_1min']}; total {report['total_seconds']:.0f} s")
    common.save_report(report, out_path)
    return 0


def _run_part(part: str, args: argparse.Namespace, sizes: dict[str, Any], tmp: Path, progress: bool) -> dict:
    if part == "throughput":
        from benchmarks import throughput

        return throughput.run(**sizes)
    if part == "data":
        from benchmarks import data_pipeline

        return data_pipeline.run(tmp / "data", progress=progress, **sizes)
    if part == "inference":
        from benchmarks import inference

        return inference.run(**sizes)
    if part == "gpu":
        from benchmarks import gpu

        return gpu.run(**sizes)
    from benchmarks import quality

    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"{data}: W2S 8-bit data not found (--data)")
    return quality.run(data, tmp / "quality", args.minutes, args.val_fovs, progress=progress, **sizes)


def _add_rows(table, part: str, r: dict[str, Any]) -> None:
    if "skipped" in r:
        table.add(SECTIONS[part], "skipped", r["skipped"])
        return
    if part == "throughput":
        for preset in ("default", "seed"):
            p = r[preset]
            table.add("1 training", f"{preset} ({p['parameters'] / 1e6:.2f} M params) patches/s",
                      p["patches_per_s"], f"{r['batch_size']} x {r['patch_size']}^2")
            table.add("1 training", f"{preset} Mpx/s", p["mpx_per_s"])
        p = r["careamics_size"]
        table.add("1 training", f"depth 2 ({p['parameters'] / 1e6:.2f} M params, CAREamics' CARE size) patches/s",
                  p["patches_per_s"], "CAREamics' figure: docs/performance.md")
        table.add("1 training", "default / seed, from the medians", r["speedup_default_over_seed"], "x")
        table.add("1 training", "default / seed, paired by round", r["speedup_paired_by_round"],
                  f"x (median of {len(r['speedup_per_round'])} rounds)")
    elif part == "data":
        shape = "x".join(map(str, r["stack_shape"]))
        table.add("2 data", f"cache build, once per {shape} stack", r["cache_build_s_per_stack"], "s")
        table.add("2 data", "harness loader, per batch", 1e3 * r["harness_batch_s"], "ms")
        table.add("2 data", "np.load stack per sample, per batch", 1e3 * r["original_batch_s"], "ms")
        table.add("2 data", "harness / original", r["speedup_harness_over_original"], "x faster")
        table.add("2 data", "data time in a training step", r["data_percent_of_step"], "% of step")
    elif part == "inference":
        for size, s in r["sizes"].items():
            table.add("3 inference", f"{size}^2 whole image", s["whole_mpx_per_s"], "Mpx/s")
            table.add("3 inference", f"{size}^2 tiled ({r['tile']}^2 tiles)", s["tiled_mpx_per_s"], "Mpx/s")
        rss = r["peak_rss"]
        table.add("3 inference", f"{rss['size']}^2 tiled peak RSS", rss["peak_rss_mb"],
                  f"MB ({rss['rss_before_predict_mb']:.0f} MB before predicting)")
    elif part == "quality":
        for preset in ("default", "seed"):
            p = r[preset]
            table.add("4 quality", f"{preset}: val SI-PSNR after {r['budget_minutes']:g} min", p["val_si_psnr"],
                      f"dB ({p['patches_seen']:.0f} patches)")
        table.add("4 quality", "default - seed", r["si_psnr_gain_default_over_seed_db"], "dB")
        table.add("4 quality", "noisy input SI-PSNR", r["default"]["noisy_si_psnr"], "dB")
    elif part == "gpu":
        for name, t in r["training"].items():
            table.add("5 gpu", f"training {name} patches/s", t["patches_per_s"],
                      f"{t['batch_size']} x {t['patch_size']}^2, {t['mpx_per_s']:.3g} Mpx/s")
        for name, i in r["inference"].items():
            table.add("5 gpu", f"{name}: (3, 512, 512) stack, container path", i["seconds"], "s")


if __name__ == "__main__":
    sys.exit(main())
