"""Container faults, with the entrypoint run as a local process (the same faults run inside the image in
`make docker-test`, submission/docker_test.py `container_faults`): two inputs in one job, a read-only output
folder, and an input larger than the memory limit the process runs under.

Empty /input and an unreadable (corrupt) TIFF are covered by tests/submission/test_inference.py; a TIFF with
no read permission by tests/faults/test_bad_input.py::test_unreadable_permission.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bad_inputs import files_under, good_image, without_file_override
from submission.inference import OUTPUT_SUBDIR, main

REPO_ROOT = Path(__file__).resolve().parents[2]
MEMORY_MARGIN = 16 << 20  # bytes the big job may use beyond the one-slice job's peak
SLICE = (256, 256)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO_ROOT / "tests" / "submission"))
    from submission_fixtures import save_tiny_checkpoint

    from submission.package import package_model

    root = tmp_path_factory.mktemp("container-faults")
    package_model(save_tiny_checkpoint(root / "best.pt"), root / "model")
    return root / "model"


def place(input_root: Path, name: str, array: np.ndarray, track: str = "unstructured") -> Path:
    path = input_root / "images" / f"image-stack-{track}-noise" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def entrypoint(input_root: Path, output_root: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "submission.inference", "--input", str(input_root), "--output", str(output_root),
            "--model-dir", str(model), "--device", "cpu"]


def test_two_inputs_in_one_job_are_both_denoised(tmp_path, model_dir):
    """Grand Challenge sends one case per job, but two must not confuse the entrypoint: each gets its output."""
    first = place(tmp_path / "in", "first.tif", good_image((2, 40, 48)))
    second = place(tmp_path / "in", "second.tif", good_image((56, 40), seed=1), track="structured")
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model-dir", str(model_dir),
                 "--device", "cpu"]) == 0
    written = sorted(p.name for p in files_under(tmp_path / "out"))
    assert written == ["first.tif", "second.tif"]
    for source in (first, second):
        output = tifffile.imread(tmp_path / "out" / OUTPUT_SUBDIR / source.name)
        assert output.dtype == np.float32 and output.shape == tifffile.imread(source).shape


def test_read_only_output_is_a_clean_error_before_any_work(tmp_path, model_dir):
    """A read-only output folder (mode 555, for a process to which permission bits apply): exit 1, one line,
    before the model is loaded, nothing written."""
    prefix = without_file_override()
    if prefix is None:
        pytest.skip("running as root and util-linux's setpriv is missing, so mode 555 cannot stop the writer")
    place(tmp_path / "in", "case.tif", good_image())
    output = tmp_path / "out"
    output.mkdir()
    os.chmod(output, 0o555)
    try:
        result = subprocess.run([*prefix, *entrypoint(tmp_path / "in", output, model_dir)], capture_output=True,
                                text=True, timeout=300, cwd=REPO_ROOT)
    finally:
        os.chmod(output, 0o755)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "not writable" in lines[0] and str(output) in lines[0], result.stderr
    assert "model ready" not in result.stdout
    assert not files_under(output)


@pytest.mark.slow
def test_input_larger_than_the_memory_limit_is_tiled_not_killed(tmp_path, model_dir):
    """The one-slice job's peak memory + 16 MiB becomes the limit (a real cgroup, so going over it is an OOM
    kill, exit 137, as Grand Challenge reports it); then a float64 stack whose input and output need 3x that
    margin more than one slice runs under it. It passes only because the input is memory-mapped and the output
    filled slice by slice through a memory map: the entrypoint's previous path (input read whole, output held
    whole) was measured to be OOM-killed under the same limit (README, "Bad input and faults")."""
    from submission.containers import memory_cgroup
    from training.errors import UserError

    peaks = {}
    slices = math.ceil(3 * MEMORY_MARGIN / (12 * SLICE[0] * SLICE[1]))  # float64 in (8 B/px) + float32 out (4 B/px)
    rng = np.random.default_rng(0)
    for name, count in (("small", 1), ("big", slices)):
        job = tmp_path / name
        array = 100 + 300 * rng.random((count, *SLICE))
        place(job / "in", f"{name}.tif", array)
        limit = 4 << 30 if name == "small" else peaks["small"] + MEMORY_MARGIN
        try:
            with memory_cgroup(limit) as group:
                result = subprocess.run(group.wrap(entrypoint(job / "in", job / "out", model_dir)), capture_output=True,
                                        text=True, timeout=600, cwd=REPO_ROOT)
                peaks[name] = group.peak()
        except UserError as exc:
            pytest.skip(f"cannot limit a process's memory here: {exc}")
        assert result.returncode == 0, f"{name}: exit {result.returncode} under {limit >> 20} MiB\n{result.stderr}"
        assert peaks[name], "the cgroup reported no peak"
    output = tifffile.imread(tmp_path / "big" / "out" / OUTPUT_SUBDIR / "big.tif")
    assert output.shape == (slices, *SLICE) and output.dtype == np.float32 and np.isfinite(output).all()
    print(f"\n{slices} slices of {SLICE} float64: input {array.nbytes >> 20} MiB, output {output.nbytes >> 20} MiB; "
          f"peak {peaks['small'] / 2**20:.0f} MiB on 1 slice, {peaks['big'] / 2**20:.0f} MiB on {slices} "
          f"(limit {(peaks['small'] + MEMORY_MARGIN) / 2**20:.0f} MiB)")
