"""`python -m benchmarks --quick` (what `make bench BENCH_ARGS=--quick` runs) on tiny sizes: every part runs
and the JSON holds its measured figures. Figures are checked for sanity only, never against a time."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu
from conftest import REPO_ROOT, write_8bit


def numbers(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from numbers(value)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


@pytest.mark.slow  # about 20-25 s on 2 CPU cores: four parts, two tiny trainings, a subprocess
def test_quick_bench_runs_every_part_and_writes_json(tmp_path):
    data = write_8bit(tmp_path / "data", fovs={"train": (1, 2, 71), "test": (81,)}, shape=(40, 48))
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--data", str(data),
                           "--val-fovs", "071", "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert list(results) == ["throughput", "data", "inference", "quality", "gpu"]
    assert not [part for part, r in results.items() if "skipped" in r and part != "gpu"]
    if not torch.cuda.is_available():
        assert results["gpu"]["skipped"] == "no CUDA device on this machine"
        assert "5 gpu" in done.stdout and "skipped" in done.stdout
    else:
        assert results["gpu"]["training"]["cuda_b2_amp"]["patches_per_s"] > 0
    assert all(math.isfinite(x) for x in numbers(results))

    t = results["throughput"]
    assert t["seed"]["parameters"] > t["default"]["parameters"] > t["careamics_size"]["parameters"] > 0
    assert t["speedup_default_over_seed"] == t["default"]["patches_per_s"] / t["seed"]["patches_per_s"]
    d = results["data"]
    assert d["stack_shape"] == [8, 64, 64] and d["harness_batch_s"] > 0 and d["original_batch_s"] > 0
    assert 0 < d["data_percent_of_step"] < 100
    i = results["inference"]
    assert set(i["sizes"]) == {"64", "128"} and i["peak_rss"]["size"] == 256
    assert i["peak_rss"]["peak_rss_mb"] >= i["peak_rss"]["rss_before_predict_mb"] > 0
    q = results["quality"]
    assert q["budget_minutes"] == 0.02 and q["default"]["train_minutes"] >= 0.02 and q["seed"]["patches_seen"] > 0
    assert t["speedup_paired_by_round"] > 0 and len(t["speedup_per_round"]) == 1
    for section in ("1 training", "2 data", "3 inference", "4 quality", "default / seed", "harness / original"):
        assert section in done.stdout
    assert f"saved {out}" in done.stdout


def test_unknown_part_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "speed"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown part(s) speed" in done.stderr


def test_gpu_part_measures_the_trainer_step_and_the_container_path_on_any_device():
    """The GPU part's two measurements, run on the CPU here (the same code times CUDA where there is one)."""
    cpu = torch.device("cpu")
    for bf16 in (False, True):
        t = gpu.training_throughput(cpu, batch_size=2, patch_size=32, steps=2, cpu_bf16=bf16, warmup=1)
        assert t["steps"] == 2 and t["patches_per_s"] == 2 / t["median_step_s"] > 0
        assert t["mpx_per_s"] == pytest.approx(t["patches_per_s"] * 32 * 32 / 1e6)
    i = gpu.stack_inference(cpu, repeats=1, shape=(2, 40, 48))
    assert i["shape"] == [2, 40, 48] and i["seconds"] > 0 and i["mpx_per_s"] == pytest.approx(2 * 40 * 48 / i["seconds"] / 1e6)


def test_the_table_shows_db_to_a_hundredth():
    from benchmarks.common import Table

    table = Table()
    for value in (32.0273, 2.1497, 0.00163, 1927.4, None):
        table.add("4 quality", "x", value, "dB")
    assert [row[2] for row in table.rows] == ["32.03", "2.15", "0.00163", "1927", "n/a"]
