"""AI4Life-MDC24 container entrypoint: denoise every challenge input TIFF with the packaged model.

The contract (shared/docs/challenge.md): read `/input/images/image-stack-*-noise/*.tif[f]` (read-only),
write `/output/images/image-stack-denoised/<input stem>.tif`, float32, the input's exact shape (2-D or a
stack: every slice over the leading axes is denoised; Y and X doubled for a jdsr model, which only
`w2s package --allow-2x` packages, as the challenge rejects such outputs), with a resolution unit so that Grand Challenge's
importer (panimg) accepts it; exactly one output per input; no network; a non-zero exit fails the job.

Prediction is `training.predict.predict_stack` (per-slice normalization, tiled, normalization inverted), the
same function `w2s predict` uses, so the container and the host agree to float precision. CUDA is used when
available, else CPU. The model is the folder written by `w2s package` (checkpoint, config, manifest with
checksums); it is verified before use, and `--self-check` runs the whole path on a synthetic stack so that a
missing or corrupt model fails the image build rather than a challenge job.

Bad input is reported as one line naming the file (no traceback) and the exit code is 1; the other inputs
are still processed. An output folder that cannot be written fails the job before the model is loaded.
Outputs are written under a temporary name and renamed. Memory is bounded by one slice, not by the input:
uncompressed TIFFs are memory-mapped and the output TIFF is filled slice by slice through a memory map.

Every location can be overridden, so the same code runs outside a container:
`python -m submission.inference --input DIR --output DIR --model-dir DIR` (or W2S_INPUT_DIR, W2S_OUTPUT_DIR,
W2S_MODEL_DIR, W2S_DEVICE, W2S_TILE, W2S_BATCH_SIZE, W2S_AMP=0).

Only torch, numpy, tifffile and tqdm may be imported on this path (submission/requirements.txt): the image
does not contain the rest of the project's dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

PROG = "w2s-submission"
DEFAULT_INPUT = "/input"
DEFAULT_OUTPUT = "/output"
DEFAULT_MODEL_DIR = "/opt/w2s/model"
INPUT_DIR_PATTERN = "images/image-stack-*-noise"
OUTPUT_SUBDIR = "images/image-stack-denoised"
TIFF_SUFFIXES = (".tif", ".tiff")
# 1024 px tiles: both challenge tracks (W2S 512 x 512 slices, Hagen 1024 x 1024) go through the network in one
# pass, exactly as `predict_image` would (measured on 2 CPU cores: Hagen 15 s, against 32 s with 512 px tiles,
# same peak memory, ~1.3 GB); anything larger is tiled so memory stays bounded whatever arrives. The overlap is
# the network's receptive radius (training.predict.default_overlap).
DEFAULT_TILE = 1024
CHECKPOINT_NAME = "best.pt"
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "w2s-submission-manifest/1"


class SubmissionError(Exception):
    """Something the operator or the input is responsible for: one line on stderr, exit 1."""


# ------------------------------------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def process_age() -> float | None:
    """Seconds since this process started (Linux), so the cold start includes interpreter start-up."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


_IMPORT_TIME = time.perf_counter()


def seconds_since_start() -> float:
    age = process_age()
    return age if age is not None else time.perf_counter() - _IMPORT_TIME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------- inputs


def find_inputs(input_root: Path) -> list[Path]:
    """Every TIFF name in `input_root/images/image-stack-*-noise/`, sorted (hidden and temporary files skipped)."""
    found = []
    for folder in sorted(Path(input_root).glob(INPUT_DIR_PATTERN)):
        if folder.is_dir():
            # not only regular files: a broken link, a loop or a folder named *.tif is reported by name, not skipped
            found += [p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")]
    return sorted(found)


def describe_missing_inputs(input_root: Path) -> str:
    images = Path(input_root) / "images"
    pattern = f"{Path(input_root) / INPUT_DIR_PATTERN}/*.tif[f]"
    if not Path(input_root).is_dir():
        return f"no input images: input folder {input_root} does not exist (expected {pattern})"
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in images.iterdir()) if images.is_dir() else []
    where = f"; {images} holds: {', '.join(present[:10])}" if present else f"; {images} is empty or missing"
    return f"no input images: nothing matches {pattern}{where}"


def output_path_for(output_root: Path, input_path: Path) -> Path:
    return Path(output_root) / OUTPUT_SUBDIR / f"{input_path.stem}.tif"


def check_unique_outputs(inputs: Sequence[Path], output_root: Path) -> None:
    """Two inputs with one stem (a.tif and a.tiff, or one name in both tracks) would overwrite each other."""
    seen: dict[Path, Path] = {}
    for path in inputs:
        target = output_path_for(output_root, path)
        if target in seen:
            raise SubmissionError(f"{path} and {seen[target]} would both be written to {target}")
        seen[target] = path


# -------------------------------------------------------------------------------------------------- model


def read_manifest(model_dir: Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_NAME
    if not model_dir.is_dir():
        raise SubmissionError(f"model folder {model_dir} not found (make one with `w2s package MODEL --out DIR`, "
                              f"then pass --model-dir DIR or set W2S_MODEL_DIR)")
    if not path.is_file():
        raise SubmissionError(f"{path}: model manifest missing (the folder was not made by `w2s package`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"{path}: unreadable model manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise SubmissionError(f"{path}: not a w2s submission manifest (missing format '{MANIFEST_FORMAT}')")
    return manifest


def verify_model_dir(model_dir: Path) -> dict[str, Any]:
    """Every file the manifest lists is present with its recorded SHA-256; returns the manifest."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    files = manifest.get("files") or {}
    if CHECKPOINT_NAME not in files:
        raise SubmissionError(f"{model_dir / MANIFEST_NAME}: lists no {CHECKPOINT_NAME}")
    for name, info in sorted(files.items()):
        path = model_dir / name
        if not path.is_file():
            raise SubmissionError(f"{path}: model file missing (listed in {MANIFEST_NAME})")
        actual = sha256_file(path)
        if actual != info.get("sha256"):
            raise SubmissionError(f"{path}: checksum mismatch (sha256 {actual[:12]}..., manifest says "
                                  f"{str(info.get('sha256'))[:12]}...): the model file is corrupt or was replaced")
    return manifest


def select_device(name: str):
    import torch

    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SubmissionError(f"device {name!r} requested but CUDA is not available")
    return device


def load_packaged_model(model_dir: Path, device):
    """Verify the folder, then load the checkpoint with torch.load(weights_only=True) (training.checkpoint)."""
    from training.checkpoint import load_model
    from training.errors import UserError

    manifest = verify_model_dir(model_dir)
    try:
        loaded = load_model(Path(model_dir) / CHECKPOINT_NAME, device)
    except UserError as exc:
        raise SubmissionError(str(exc)) from None
    return loaded, manifest


def denoise(loaded, image, device, tile: int = DEFAULT_TILE, batch_size: int | None = None, amp: bool = True,
            out=None):
    """The packaged model applied to a 2-D image or a stack; float32, same shape (Y and X doubled for a jdsr
    model packaged with --allow-2x) (training.predict)."""
    from training.predict import DEFAULT_BATCH_SIZE, predict_stack

    return predict_stack(loaded.model, loaded.normalization, image, tile=tile, overlap=None,
                         batch_size=batch_size or DEFAULT_BATCH_SIZE, device=device, amp=amp, progress=False, out=out)


# ---------------------------------------------------------------------------------------------------- run


def process_case(path: Path, output_root: Path, loaded, device, tile: int, batch_size: int | None,
                 amp: bool) -> Path:
    """Denoise one input into its output file. Memory stays bounded by one slice and one batch of tiles: an
    uncompressed input is memory-mapped, and the output TIFF is mapped and filled slice by slice."""
    from training.errors import UserError
    from training.io import check_finite, read_image, tiff_writer_memmap

    try:
        image = read_image(path, mmap=True)
        check_finite(image, path)
    except UserError as exc:
        raise SubmissionError(str(exc)) from None
    started = time.perf_counter()
    target = output_path_for(output_root, path)
    scale = loaded.model.config.scale  # 1, or 2 for a jdsr model packaged with --allow-2x
    shape = (*image.shape[:-2], scale * image.shape[-2], scale * image.shape[-1])
    try:
        with tiff_writer_memmap(target, shape) as output:  # float32, resolution unit, temp name then rename
            inputs, outputs = image.reshape(-1, *image.shape[-2:]), output.reshape(-1, *shape[-2:])
            for index in range(len(inputs)):
                denoise(loaded, inputs[index], device, tile, batch_size, amp, out=outputs[index])
                output.flush()  # written back slice by slice: dirty pages stay reclaimable under a memory limit
            try:
                check_finite(output, path)
            except UserError:  # raised inside the block: the temporary file is removed, nothing is written
                raise SubmissionError(f"{path}: the model produced NaN/Inf values; nothing written") from None
    except OSError as exc:
        raise SubmissionError(f"{target}: cannot write output ({exc.strerror or exc})") from None
    log(f"case {path.name}: {tuple(image.shape)} {image.dtype} -> {target} in {time.perf_counter() - started:.3f} s "
        f"on {device.type}")
    return target


def check_output_writable(output_root: Path) -> None:
    """Fail before the model is loaded when /output cannot take the results (a read-only mount, no space)."""
    import tempfile

    folder = Path(output_root) / OUTPUT_SUBDIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".w2s-write-check-", dir=folder):
            pass
    except OSError as exc:
        raise SubmissionError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None


def run(input_root: Path, output_root: Path, model_dir: Path, device_name: str = "auto", tile: int = DEFAULT_TILE,
        batch_size: int | None = None, amp: bool = True) -> int:
    """Denoise every input; 0 when all were written, 1 when any failed or there was nothing to do."""
    input_root, output_root = Path(input_root), Path(output_root)
    inputs = find_inputs(input_root)
    if not inputs:
        raise SubmissionError(describe_missing_inputs(input_root))
    check_unique_outputs(inputs, output_root)
    check_output_writable(output_root)
    device = select_device(device_name)
    loaded, manifest = load_packaged_model(Path(model_dir), device)
    log(f"model ready {seconds_since_start():.2f} s after process start: run {manifest.get('run_id') or '?'}, "
        f"sha256 {manifest['files'][CHECKPOINT_NAME]['sha256'][:12]}, device {device}, tile {tile}, "
        f"{len(inputs)} input(s)")
    failed = 0
    for path in inputs:
        try:
            process_case(path, output_root, loaded, device, tile, batch_size, amp)
        except SubmissionError as exc:
            failed += 1
            error(str(exc))
        except Exception as exc:  # a bug or out of memory: name the file, keep the traceback for the job log
            failed += 1
            error(f"{path}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    log(f"done: {len(inputs) - failed} of {len(inputs)} written, {seconds_since_start():.2f} s after process start")
    return 1 if failed else 0


def self_check(model_dir: Path) -> int:
    """Build-time check: the manifest's files are all there and intact, and the whole path runs on CPU."""
    import numpy as np

    device = select_device("cpu")
    loaded, manifest = load_packaged_model(Path(model_dir), device)
    stack = np.random.default_rng(0).poisson(200.0, size=(2, 40, 56)).astype(np.uint16)
    output = denoise(loaded, stack, device, tile=DEFAULT_TILE)
    scale = loaded.model.config.scale
    expected = (*stack.shape[:-2], scale * stack.shape[-2], scale * stack.shape[-1])
    if output.shape != expected or output.dtype != np.float32 or not np.isfinite(output).all():
        raise SubmissionError(f"self-check failed: output {output.shape} {output.dtype} for input {stack.shape}")
    log(f"self-check ok: {Path(model_dir) / CHECKPOINT_NAME} (sha256 "
        f"{manifest['files'][CHECKPOINT_NAME]['sha256'][:12]}, run {manifest.get('run_id') or '?'})")
    return 0


# ---------------------------------------------------------------------------------------------------- CLI


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SubmissionError(f"${name}={value!r}: expected an integer") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog=PROG, description="Denoise AI4Life-MDC24 challenge inputs.")
    parser.add_argument("--input", default=env("W2S_INPUT_DIR") or DEFAULT_INPUT,
                        help="input root holding images/image-stack-*-noise/ (default: $W2S_INPUT_DIR or /input)")
    parser.add_argument("--output", default=env("W2S_OUTPUT_DIR") or DEFAULT_OUTPUT,
                        help="output root; outputs go to images/image-stack-denoised/ (default: $W2S_OUTPUT_DIR or /output)")
    parser.add_argument("--model-dir", default=env("W2S_MODEL_DIR") or DEFAULT_MODEL_DIR,
                        help="folder made by `w2s package` (default: $W2S_MODEL_DIR or /opt/w2s/model)")
    parser.add_argument("--device", default=env("W2S_DEVICE") or "auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--tile", type=int, default=None, help=f"tile size in pixels (default: $W2S_TILE or {DEFAULT_TILE})")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: $W2S_BATCH_SIZE or 4)")
    parser.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA (also W2S_AMP=0)")
    parser.add_argument("--self-check", action="store_true", help="verify the model folder and run it on a synthetic stack")
    args = parser.parse_args(argv)
    args.tile = args.tile if args.tile is not None else _env_int("W2S_TILE", DEFAULT_TILE)
    args.batch_size = args.batch_size if args.batch_size is not None else _env_int("W2S_BATCH_SIZE", None)
    args.amp = not args.no_amp and env("W2S_AMP", "1").strip().lower() not in ("0", "false", "no", "off")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.self_check:
            return self_check(Path(args.model_dir))
        return run(Path(args.input), Path(args.output), Path(args.model_dir), args.device, args.tile,
                   args.batch_size, args.amp)
    except SubmissionError as exc:
        error(str(exc))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
