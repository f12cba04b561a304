"""`make docker-test`: run the built image the way Grand Challenge does and check everything it writes.

For each case (the real challenge inputs, when present, and generated edge cases: a 4-D stack, a non-square
image, an image smaller than one network level, uint8 and float32 inputs) the image runs once, as one
challenge job: its own non-root user and entrypoint, no network, /input read-only with exactly one image in
images/image-stack-<track>-noise/, an empty tmpfs /tmp, /output writable. Then:

- exactly one output, /output/images/image-stack-denoised/<input stem>.tif, and nothing else there;
- float32, the input's exact shape, no NaN/Inf, values within the input's range widened by its span;
- equal to `w2s predict` on the same file outside the container (same model file, same tile size, CPU),
  within 1e-4 of the reference's largest magnitude;
- Grand Challenge's importer panimg (`panimg.convert` on the output folder) imports it.

Failure modes run in the image too: no input (non-zero exit, a clear message, no output), an unreadable TIFF
(non-zero exit naming the file, nothing written for it), two inputs in one job (both written), a TIFF the
job's user has no permission to read, a read-only /output (a clean error before any work), and with
--memory-slices N an input far larger than a memory limit set from the one-slice peak (it must run, tiled).
The image config is checked first: User set and not root, Entrypoint set, linux/amd64, and the model checksum
label equal to the local package.

Timings come from the container: wall time of each run (container start to exit), the entrypoint's own
"model ready N s after process start" (cold start) and per-case seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from submission.containers import Engine, ImageInfo, Mount, detect_engine
from submission.inference import (CHECKPOINT_NAME, DEFAULT_TILE, INPUT_DIR_PATTERN, OUTPUT_SUBDIR, PROG,
                                  TIFF_SUFFIXES)
from training.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = "w2s-mdc24:latest"
DEFAULT_MODEL_DIR = Path("build/submission/context/model")
DEFAULT_REAL_INPUTS = Path("../shared/data/challenge/input")
RELATIVE_TOLERANCE = 1e-4
RUN_TIMEOUT = 900.0
READY = re.compile(r"model ready ([\d.]+) s after process start")
CASE = re.compile(r"case (\S+): .* in ([\d.]+) s on (\w+)")


@dataclass
class Case:
    name: str  # the input file name
    track: str  # "unstructured" or "structured"
    source: Path | None = None  # a real input file, copied
    array: np.ndarray | None = None  # or a generated one
    description: str = ""


@dataclass
class CaseResult:
    case: Case
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    shape: tuple = ()
    dtype: str = ""
    wall_s: float = 0.0
    ready_s: float | None = None
    case_s: float | None = None
    device: str = ""
    max_rel_diff: float | None = None
    panimg: str = ""

    def fail(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)


def edge_cases(seed: int = 0) -> list[Case]:
    """Generated inputs for the shapes and pixel types a challenge case may have."""
    rng = np.random.default_rng(seed)

    def scene(shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        yy, xx = np.meshgrid(np.linspace(0, 6, shape[-2]), np.linspace(0, 9, shape[-1]), indexing="ij")
        clean = 0.5 + 0.5 * np.sin(yy) * np.cos(xx)
        return low + (high - low) * np.clip(clean + rng.normal(0, 0.15, shape), 0, 1)

    return [
        Case("stack4d.tif", "unstructured", array=scene((2, 3, 64, 80), 100, 400).astype(np.uint16),
             description="4-D stack (2, 3, 64, 80) uint16"),
        Case("nonsquare.tif", "structured", array=scene((200, 328), -50, 900).astype(np.int16),
             description="non-square (200, 328) int16"),
        Case("tiny.tif", "unstructured", array=scene((5, 7), 0, 255).astype(np.uint8),
             description="smaller than one tile and one network level: (5, 7) uint8"),
        Case("uint8.tiff", "unstructured", array=scene((3, 96, 96), 0, 255).astype(np.uint8),
             description="uint8 stack (3, 96, 96), .tiff suffix"),
        Case("float32.tif", "structured", array=scene((120, 96), 0.0, 1.0).astype(np.float32),
             description="float32 (120, 96) in [0, 1]"),
    ]


def real_cases(root: Path) -> list[Case]:
    cases = []
    for folder in sorted(root.glob(INPUT_DIR_PATTERN)):
        track = folder.name[len("image-stack-"):-len("-noise")]
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
                cases.append(Case(path.name, track, source=path, description=f"real challenge input ({track})"))
    return cases


# ---------------------------------------------------------------------------------------------- checks


def check_image_config(info: ImageInfo, manifest: dict[str, Any]) -> list[str]:
    problems = []
    user = info.user.split(":", 1)[0]
    if user in ("", "root", "0"):
        problems.append(f"image runs as root (User={info.user!r}); Grand Challenge rejects that")
    if not info.entrypoint:
        problems.append("image has no Entrypoint")
    if (info.os, info.architecture) != ("linux", "amd64"):
        problems.append(f"image platform is {info.os}/{info.architecture}, not linux/amd64")
    label = info.labels.get("w2s.model.sha256", "")
    expected = manifest["files"][CHECKPOINT_NAME]["sha256"]
    if label != expected:
        problems.append(f"image model sha256 label {label[:12] or 'missing'} != local package {expected[:12]} "
                        f"(rebuild with make docker-build, or point --model-dir at the package the image holds)")
    return problems


def plausible_range(image: np.ndarray) -> tuple[float, float]:
    low, high = float(np.min(image)), float(np.max(image))
    span = max(high - low, 1e-6 * max(1.0, abs(high)))
    return low - span, high + span


def compare(output: np.ndarray, reference: np.ndarray) -> float:
    """max |output - reference| relative to the reference's largest magnitude."""
    scale = max(float(np.max(np.abs(reference))), 1e-12)
    return float(np.max(np.abs(output.astype(np.float64) - reference.astype(np.float64)))) / scale


def panimg_import(folder: Path) -> dict[Path, str]:
    """panimg's convert on `folder`, as Grand Challenge imports outputs: file -> '' when imported, else why not."""
    from panimg import convert

    logging.getLogger("panimg").setLevel(logging.CRITICAL)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    with tempfile.TemporaryDirectory(prefix="w2s-panimg-") as tmp:
        result = convert(input_directory=folder, output_directory=Path(tmp))
    consumed = {Path(p).resolve() for p in result.consumed_files}
    imported = {image.name for image in result.new_images}
    verdict = {}
    for path in files:
        if path.resolve() in consumed and path.name in imported:
            verdict[path] = ""
        else:
            errors = result.file_errors.get(path.resolve()) or result.file_errors.get(path) or ["not consumed"]
            tiff = [e for e in errors if e.startswith("TIFF")] or errors
            verdict[path] = "; ".join(tiff)
    return verdict


def w2s_predict(files: Sequence[Path], checkpoint: Path, out_dir: Path, tile: int) -> None:
    """The host-side reference: `w2s predict` with the packaged checkpoint, on CPU."""
    w2s = Path(sys.executable).with_name("w2s")
    command = [str(w2s) if w2s.exists() else "w2s", "predict", *map(str, files), "--model", str(checkpoint),
               "--out", str(out_dir), "--tile", str(tile), "--device", "cpu", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"w2s predict (the reference) failed: {(result.stderr or result.stdout).strip()[-400:]}")


# -------------------------------------------------------------------------------------------------- runs


def make_job(work: Path, name: str) -> tuple[Path, Path]:
    """Fresh /input and /output folders for one job; readable/writable by the image's non-root user."""
    job = work / name
    input_root, output_root = job / "input", job / "output"
    (input_root / "images").mkdir(parents=True)
    output_root.mkdir(parents=True)
    os.chmod(output_root, 0o777)
    return input_root, output_root


def open_up(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def place_input(case: Case, input_root: Path) -> Path:
    import tifffile

    folder = input_root / "images" / f"image-stack-{case.track}-noise"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / case.name
    if case.source is not None:
        shutil.copyfile(case.source, target)
    else:
        tifffile.imwrite(target, case.array)
    open_up(input_root)
    return target


def run_job(engine: Engine, info: ImageInfo, input_root: Path, output_root: Path, timeout: float):
    return engine.run_image(info, [Mount(input_root, "/input", read_only=True), Mount(output_root, "/output")],
                            network=False, timeout=timeout)


def output_files(output_root: Path) -> list[Path]:
    folder = output_root / OUTPUT_SUBDIR
    return sorted(folder.iterdir()) if folder.is_dir() else []


def run_case(engine: Engine, info: ImageInfo, case: Case, work: Path, timeout: float) -> tuple[CaseResult, Path, Path | None]:
    import tifffile

    result = CaseResult(case)
    input_root, output_root = make_job(work, f"case-{Path(case.name).stem}")
    input_path = place_input(case, input_root)
    image = tifffile.imread(input_path)
    result.shape, result.dtype = tuple(image.shape), str(image.dtype)
    run = run_job(engine, info, input_root, output_root, timeout)
    result.wall_s = run.seconds
    if (match := READY.search(run.stdout)):
        result.ready_s = float(match.group(1))
    if (match := CASE.search(run.stdout)):
        result.case_s, result.device = float(match.group(2)), match.group(3)
    if run.returncode != 0:
        result.fail(f"exit {run.returncode}: {(run.stderr or run.stdout).strip()[-500:]}")
        return result, input_path, None
    outputs = output_files(output_root)
    expected = output_root / OUTPUT_SUBDIR / f"{input_path.stem}.tif"
    if [p.name for p in outputs] != [expected.name]:
        result.fail(f"expected exactly {expected.name} in {OUTPUT_SUBDIR}, found {[p.name for p in outputs]}")
        return result, input_path, None
    output = tifffile.imread(expected)
    if output.dtype != np.float32:
        result.fail(f"output dtype {output.dtype}, not float32")
    if output.shape != image.shape:
        result.fail(f"output shape {output.shape} != input shape {image.shape}")
    if not np.isfinite(output).all():
        result.fail("output has NaN/Inf")
    else:
        low, high = plausible_range(image)
        if output.min() < low or output.max() > high:
            result.fail(f"output range [{output.min():.4g}, {output.max():.4g}] outside the plausible "
                        f"[{low:.4g}, {high:.4g}] for input range [{image.min()}, {image.max()}]")
    return result, input_path, expected


def failure_modes(engine: Engine, info: ImageInfo, work: Path, timeout: float) -> list[str]:
    """No input, and an unreadable TIFF: both must exit non-zero with a clear message and write nothing."""
    problems = []
    input_root, output_root = make_job(work, "fail-no-input")
    open_up(input_root)
    run = run_job(engine, info, input_root, output_root, timeout)
    if run.returncode == 0 or "no input images" not in run.stderr:
        problems.append(f"no input: expected a non-zero exit and 'no input images', got exit {run.returncode}: "
                        f"{run.stderr.strip()[-300:]}")
    if output_files(output_root):
        problems.append("no input: outputs were written")
    print(f"  no input        -> exit {run.returncode}: {_message(run.stderr)}")

    input_root, output_root = make_job(work, "fail-unreadable")
    folder = input_root / "images" / "image-stack-unstructured-noise"
    folder.mkdir(parents=True)
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"\x00not a tiff" * 20)
    open_up(input_root)
    run = run_job(engine, info, input_root, output_root, timeout)
    if run.returncode == 0 or "broken.tif" not in run.stderr:
        problems.append(f"unreadable TIFF: expected a non-zero exit naming broken.tif, got exit {run.returncode}: "
                        f"{run.stderr.strip()[-300:]}")
    if "Traceback" in run.stderr:
        problems.append("unreadable TIFF: a traceback instead of a one-line error")
    if output_files(output_root):
        problems.append(f"unreadable TIFF: something was written: {[p.name for p in output_files(output_root)]}")
    print(f"  unreadable TIFF -> exit {run.returncode}: {_message(run.stderr)}")
    return problems


def container_faults(engine: Engine, info: ImageInfo, work: Path, timeout: float, memory_slices: int = 0) -> list[str]:
    """Two inputs in one job, a TIFF the job's user may not read, a read-only /output, and (with
    `memory_slices`) an input larger than a memory limit; prints one row per fault: expected, observed."""
    import tifffile

    problems = []
    rng = np.random.default_rng(1)

    def image(shape, dtype=np.uint16):
        return (100 + 300 * rng.random(shape)).astype(dtype)

    def row(fault: str, expected: str, run, ok: bool, why: str = "") -> None:
        observed = f"exit {run.returncode}: {_message(run.stderr) if run.returncode else 'ok'}"
        print(f"  {fault:<22} expected {expected:<44} observed {observed[:150]}  {'ok' if ok else 'FAILED'}")
        if not ok:
            problems.append(f"{fault}: expected {expected}, observed {observed} {why}".strip())

    # two inputs in one job: both are denoised, each to its own output
    input_root, output_root = make_job(work, "fault-two-inputs")
    cases = [Case("first.tif", "unstructured", array=image((2, 40, 48))),
             Case("second.tif", "structured", array=image((56, 40)))]
    for case in cases:
        place_input(case, input_root)
    run = run_job(engine, info, input_root, output_root, timeout)
    written = {p.name: tifffile.imread(p) for p in output_files(output_root)}
    ok = run.returncode == 0 and sorted(written) == ["first.tif", "second.tif"] and all(
        written[c.name].shape == c.array.shape and written[c.name].dtype == np.float32 for c in cases)
    row("two inputs, one job", "exit 0, two float32 outputs of their shapes", run, ok, f"outputs {sorted(written)}")

    # a TIFF the job's (non-root) user cannot read
    input_root, output_root = make_job(work, "fault-unreadable-permission")
    locked = place_input(Case("locked.tif", "unstructured", array=image((32, 32))), input_root)
    os.chmod(locked, 0)
    run = run_job(engine, info, input_root, output_root, timeout)
    ok = run.returncode != 0 and "locked.tif" in run.stderr and "Permission denied" in run.stderr \
        and "Traceback" not in run.stderr and not output_files(output_root)
    row("unreadable TIFF (000)", "non-zero, names locked.tif, nothing written", run, ok)

    # /output mounted read-only: a clean error before any work
    input_root, output_root = make_job(work, "fault-read-only-output")
    place_input(Case("case.tif", "unstructured", array=image((32, 32))), input_root)
    run = engine.run_image(info, [Mount(input_root, "/input", read_only=True), Mount(output_root, "/output", read_only=True)],
                           network=False, timeout=timeout)
    ok = run.returncode != 0 and "not writable" in run.stderr and "Traceback" not in run.stderr \
        and not output_files(output_root)
    row("read-only /output", "non-zero, 'not writable', nothing written", run, ok)

    if memory_slices:
        problems += memory_fault(engine, info, work, timeout, memory_slices, row)
    return problems


MEMORY_MARGIN = 16 << 20  # bytes the big run may use beyond the small run's peak


def memory_fault(engine: Engine, info: ImageInfo, work: Path, timeout: float, slices: int, row) -> list[str]:
    """The job's memory peak on one 256 x 256 float64 slice sets the limit (peak + MEMORY_MARGIN); a stack of
    `slices` such slices, whose input and output alone exceed that margin many times over, must then run
    under the limit: memory is bounded by a slice, not by the input (an OOM kill would be exit 137)."""
    problems: list[str] = []
    rng = np.random.default_rng(2)
    peaks = {}
    for name, count, limit in (("small", 1, 8 << 30), ("big", slices, None)):
        input_root, output_root = make_job(work, f"fault-memory-{name}")
        array = 100 + 300 * rng.random((count, 256, 256))
        place_input(Case(f"{name}.tif", "unstructured", array=array), input_root)
        limit = limit or peaks["small"] + MEMORY_MARGIN
        try:
            run = engine.run_image(info, [Mount(input_root, "/input", read_only=True), Mount(output_root, "/output")],
                                   network=False, timeout=timeout, memory=limit)
        except UserError as exc:
            print(f"  memory limit           skipped: {exc}")
            return []
        peaks[name] = run.peak_memory or 0
        if name == "small":
            if run.returncode != 0 or not run.peak_memory:
                problems.append(f"memory: the one-slice run failed or reported no peak (exit {run.returncode})")
                return problems
            continue
        ok = run.returncode == 0 and [p.name for p in output_files(output_root)] == ["big.tif"]
        row("input > memory limit", f"exit 0 under {limit / 2**20:.0f} MiB", run, ok)
        print(f"    input {array.nbytes / 2**20:.0f} MiB + output {array.size * 4 / 2**20:.0f} MiB; peak "
              f"{peaks['small'] / 2**20:.0f} MiB on 1 slice, {peaks['big'] / 2**20:.0f} MiB on {slices} slices "
              f"(limit {limit / 2**20:.0f} MiB)")
    return problems


def _message(stderr: str) -> str:
    """The entrypoint's own error line (the engine may add its own lines after it)."""
    lines = [line for line in stderr.splitlines() if line.startswith(f"{PROG}: error:")]
    return lines[-1] if lines else (stderr.strip().splitlines() or [""])[-1]


# ------------------------------------------------------------------------------------------------- main


def docker_test(image: str, model_dir: Path, real_inputs: Path | None, work: Path, engine_name: str = "",
                timeout: float = RUN_TIMEOUT, generated: bool = True, report: Path | None = None,
                memory_slices: int = 0) -> bool:
    from submission.inference import verify_model_dir

    started = time.perf_counter()
    engine = detect_engine(engine_name)
    info = engine.inspect(image)
    manifest = verify_model_dir(model_dir)
    problems: list[str] = []
    print(f"{PROG} docker-test: {info.ref} ({engine.name}), {info.size / 1e9:.2f} GB, user {info.user!r}, "
          f"entrypoint {info.entrypoint}, {info.os}/{info.architecture}")
    problems += [f"image config: {p}" for p in check_image_config(info, manifest)]

    cases = []
    if real_inputs is not None:
        if real_inputs.is_dir():
            cases += real_cases(real_inputs)
        else:
            print(f"  real inputs: {real_inputs} not found, skipped")
    if generated:
        cases += edge_cases()
    if not cases:
        raise UserError("no test cases: give --real-inputs DIR or keep the generated ones")

    results: list[CaseResult] = []
    outputs: dict[str, Path] = {}
    inputs: dict[str, Path] = {}
    for case in cases:
        result, input_path, output_path = run_case(engine, info, case, work, timeout)
        results.append(result)
        inputs[case.name] = input_path
        if output_path is not None:
            outputs[case.name] = output_path
        print(f"  ran {case.name:<18} {str(result.shape):<18} {result.dtype:<7} {result.wall_s:6.1f} s "
              f"{'ok' if result.ok else 'FAILED: ' + '; '.join(result.problems)}")

    # the reference, outside the container, on the same files with the same model file and tile size
    if outputs:
        reference_dir = work / "reference"
        w2s_predict([inputs[name] for name in outputs], Path(model_dir) / CHECKPOINT_NAME, reference_dir, DEFAULT_TILE)
        import tifffile

        for result in results:
            name = result.case.name
            if name not in outputs:
                continue
            reference = tifffile.imread(reference_dir / f"{Path(name).stem}.tif")
            output = tifffile.imread(outputs[name])
            if reference.shape != output.shape:
                result.fail(f"w2s predict gave shape {reference.shape}, the container {output.shape}")
                continue
            result.max_rel_diff = compare(output, reference)
            if result.max_rel_diff > RELATIVE_TOLERANCE:
                result.fail(f"differs from w2s predict by {result.max_rel_diff:.2e} (relative) > {RELATIVE_TOLERANCE}")
        for result in results:
            name = result.case.name
            if name not in outputs:
                continue
            verdict = panimg_import(outputs[name].parent)
            why = verdict.get(outputs[name], "not seen")
            result.panimg = "imported" if not why else f"rejected: {why}"
            if why:
                result.fail(f"panimg did not import {outputs[name].name}: {why}")

    print("  failure modes in the image:")
    problems += failure_modes(engine, info, work, timeout)
    problems += container_faults(engine, info, work, timeout, memory_slices)

    print(f"\n  {'case':<18} {'shape':<18} {'dtype':<7} {'run s':>6} {'ready s':>7} {'case s':>7} {'rel diff':>9}  panimg")
    for r in results:
        print(f"  {r.case.name:<18} {str(r.shape):<18} {r.dtype:<7} {r.wall_s:6.1f} "
              f"{(f'{r.ready_s:.2f}' if r.ready_s is not None else '-'):>7} "
              f"{(f'{r.case_s:.2f}' if r.case_s is not None else '-'):>7} "
              f"{(f'{r.max_rel_diff:.1e}' if r.max_rel_diff is not None else '-'):>9}  {r.panimg or '-'}")
    problems += [f"{r.case.name}: {p}" for r in results for p in r.problems]
    total = time.perf_counter() - started
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({
            "image": info.ref, "size_bytes": info.size, "user": info.user, "entrypoint": info.entrypoint,
            "platform": f"{info.os}/{info.architecture}", "seconds": total, "problems": problems,
            "cases": [{"name": r.case.name, "description": r.case.description, "shape": list(r.shape),
                       "dtype": r.dtype, "ok": r.ok, "run_s": r.wall_s, "ready_s": r.ready_s, "case_s": r.case_s,
                       "device": r.device, "max_rel_diff": r.max_rel_diff, "panimg": r.panimg, "problems": r.problems}
                      for r in results]}, indent=2) + "\n")
    if problems:
        print(f"\n{PROG} docker-test: FAILED ({len(problems)} problem(s), {total:.0f} s):")
        for problem in problems:
            print(f"  - {problem}")
        return False
    print(f"\n{PROG} docker-test: all {len(results)} cases and every failure mode passed in {total:.0f} s "
          f"(image {info.size / 1e9:.2f} GB)")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.docker_test", description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"the package the image was built from (default: {DEFAULT_MODEL_DIR})")
    parser.add_argument("--real-inputs", default=str(DEFAULT_REAL_INPUTS),
                        help="a challenge input root (images/image-stack-*-noise/*.tif); '' for none")
    parser.add_argument("--no-generated", action="store_true", help="skip the generated edge cases")
    parser.add_argument("--engine", default="")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds per container run")
    parser.add_argument("--work", type=Path, default=None, help="keep the job folders here (default: a temp dir)")
    parser.add_argument("--report", type=Path, default=Path("build/submission/docker-test.json"))
    parser.add_argument("--memory-slices", type=int, default=0,
                        help="also run a stack of N 256x256 float64 slices under a memory limit of the one-slice peak "
                             "+ 16 MiB (needs a writable cgroup; N=65 needs 3x that margin without tiling, and is "
                             "4.3 Mpx of CPU inference, minutes with a full-size model, so off by default)")
    args = parser.parse_args(argv)
    root = REPO_ROOT if (REPO_ROOT / "Dockerfile").is_file() else Path.cwd()
    model_dir = args.model_dir or root / DEFAULT_MODEL_DIR
    real = Path(args.real_inputs) if args.real_inputs else None
    if real is not None and not real.is_absolute():
        real = (root / real).resolve()
    try:
        if args.work is not None:
            args.work.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="docker-test-", dir=args.work))
            ok = docker_test(args.image, model_dir, real, work, args.engine, args.timeout, not args.no_generated,
                             args.report, args.memory_slices)
        else:
            with tempfile.TemporaryDirectory(prefix="w2s-docker-test-") as tmp:
                ok = docker_test(args.image, model_dir, real, Path(tmp), args.engine, args.timeout,
                                 not args.no_generated, args.report, args.memory_slices)
    except UserError as exc:
        print(f"{PROG} docker-test: error: {exc}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
