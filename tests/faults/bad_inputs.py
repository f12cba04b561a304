"""The bad-input table: files users and machines hand the harness, what each must do, and a driver that runs
every case through the CLI and the container entrypoint in one clean process.

Not a conftest.py (see tests/submission/submission_fixtures.py): test modules import from here.

Why a driver process: under pytest, log records and warnings are captured by pytest itself, so a decoder's
stray warning line would never reach the stderr a test inspects. The driver (`python bad_inputs.py SPEC OUT`)
runs outside pytest, with every warning shown every time, and invokes `w2s` through click's runner (one
torch import for all cases instead of ~3 s per process) and the container entrypoint's `main()`; it records
exit code, stdout, stderr and any exception that was not a clean exit (which a real process would print as
a traceback).

Decisions recorded by the table (README "Bad input"):
- int64, uint64 and float16 are accepted: integers and floats are images; values beyond 2**24 lose precision
  in the float32 network, as any float32 pipeline does. bool, complex, structured and object arrays are refused.
- 5-D arrays are stacks (leading axes are slices, the last two Y, X) and work; 1-D and 0-D are refused.
- 1x1 and 7x13 images work (padded to the network's grid and cropped back).
- A 1-bit PNG reads as bool and is refused like any bool image.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile

OK, ERROR = "ok", "error"
GOOD_SHAPE = (40, 48)


@dataclass(frozen=True)
class Case:
    """One file and what must happen to it. `message` is a substring of the one-line error."""

    name: str  # the file name; its suffix picks the reader
    write: Callable[[Path], None]
    outcome: str
    message: str = ""
    predict_message: str = ""  # where `w2s predict` says something else (it takes folders of images too)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


def good_image(shape: tuple[int, ...] = GOOD_SHAPE, seed: int = 0) -> np.ndarray:
    return (100 + 300 * np.random.default_rng(seed).random(shape)).astype(np.uint16)


def tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _tif(array: np.ndarray) -> Callable[[Path], None]:
    return _bytes(tiff_bytes(array))


def _npy(array: np.ndarray) -> Callable[[Path], None]:
    return _bytes(npy_bytes(array))


def _png(array: np.ndarray) -> Callable[[Path], None]:
    return _bytes(png_bytes(array))


def _half(data: bytes) -> Callable[[Path], None]:
    return _bytes(data[: len(data) // 2])


def huge_header_tiff(path: Path, side: int = 20000) -> None:
    """A TIFF whose header declares side x side uint16 pixels, with none of them in the file."""
    with tifffile.TiffWriter(path) as writer:
        writer.write(shape=(side, side), dtype=np.uint16)
    with open(path, "r+b") as handle:  # keep the header (and a little more), drop the 800 MB of pixels
        handle.truncate(4096)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


def _with_nan(value: float, dtype=np.float32) -> np.ndarray:
    array = good_image().astype(dtype)
    array[3, 5] = value
    return array


def image_cases() -> list[Case]:
    good = good_image()
    tif, png, npy = tiff_bytes(good), png_bytes((good // 2).astype(np.uint8)), npy_bytes(good.astype(np.float32))
    five = good_image((2, 1, 2, 16, 24))
    return [
        # empty and truncated files
        Case("empty.tif", _bytes(b""), ERROR, "file is empty"),
        Case("empty.png", _bytes(b""), ERROR, "file is empty"),
        Case("empty.npy", _bytes(b""), ERROR, "file is empty"),
        Case("truncated.tif", _half(tif), ERROR, "truncated"),
        Case("truncated.png", _half(png), ERROR, "truncated"),
        Case("truncated.npy", _half(npy), ERROR, "cannot read image"),
        Case("header-only.tif", _bytes(tif[:8]), ERROR, "header-only.tif"),
        Case("header-only.png", _bytes(png[:33]), ERROR, "cannot read image"),
        Case("header-only.npy", _bytes(npy[:64]), ERROR, "cannot read image"),
        Case("huge-header-20000x20000.tif", huge_header_tiff, ERROR, "truncated"),
        Case("not-an-image.tif", _bytes(b"hello, I am text\n" * 4), ERROR, "not a TIFF"),
        Case("png-named.npy", _bytes(png), ERROR, "cannot read image"),
        Case("image.jpg", _bytes(png), ERROR, "unsupported image format"),
        # pixel types
        Case("bool.tif", _tif(good > 250), ERROR, "unsupported pixel type bool"),
        Case("bool.npy", _npy(good > 250), ERROR, "unsupported pixel type bool"),
        Case("bool.png", _png(good > 250), ERROR, "unsupported pixel type bool"),
        Case("complex.tif", _tif(good.astype(np.complex64)), ERROR, "unsupported pixel type complex64"),
        Case("complex.npy", _npy(good.astype(np.complex128)), ERROR, "unsupported pixel type complex128"),
        Case("structured.npy", _npy(np.zeros(GOOD_SHAPE, dtype=[("a", "f4")])), ERROR, "unsupported pixel type"),
        Case("object.npy", _bytes(npy_bytes(np.array([{"x": 1}] * 4, dtype=object), True)), ERROR, "cannot read image"),
        Case("int64.tif", _tif(good.astype(np.int64) - 200), OK),
        Case("int64.npy", _npy(good.astype(np.int64) * 1_000_000), OK),
        Case("uint64.npy", _npy(good.astype(np.uint64)), OK),
        Case("float16.npy", _npy(good.astype(np.float16)), OK),
        Case("uint16.png", _png(good), OK),
        Case("rgb.png", _png(np.repeat((good // 2).astype(np.uint8)[..., None], 3, axis=-1)), OK),
        # shapes
        Case("one-d.tif", _tif(good[0]), ERROR, "at least 2 non-empty axes"),
        Case("one-d.npy", _npy(good[0]), ERROR, "at least 2 non-empty axes"),
        Case("scalar.npy", _npy(np.float32(1.0)), ERROR, "at least 2 non-empty axes"),
        Case("zero-rows.npy", _npy(np.zeros((0, 48), np.float32)), ERROR, "at least 2 non-empty axes"),
        Case("zero-cols.npy", _npy(np.zeros((40, 0), np.float32)), ERROR, "at least 2 non-empty axes"),
        Case("zero-slices.npy", _npy(np.zeros((0, 40, 48), np.float32)), ERROR, "at least 2 non-empty axes"),
        Case("five-d.tif", _tif(five), OK),
        Case("five-d.npy", _npy(five.astype(np.float32)), OK),
        Case("one-by-one.tif", _tif(good[:1, :1]), OK),
        Case("one-by-one.npy", _npy(good[:1, :1].astype(np.float32)), OK),
        Case("seven-by-thirteen.tif", _tif(good[:7, :13]), OK),
        Case("seven-by-thirteen.png", _png((good[:7, :13] // 2).astype(np.uint8)), OK),
        Case("constant.tif", _tif(np.full(GOOD_SHAPE, 7, np.uint16)), OK),
        # values
        Case("nan.tif", _tif(_with_nan(np.nan)), ERROR, "NaN/Inf"),
        Case("inf.tif", _tif(_with_nan(np.inf)), ERROR, "NaN/Inf"),
        Case("minus-inf.npy", _npy(_with_nan(-np.inf, np.float64)), ERROR, "NaN/Inf"),
        Case("all-nan.npy", _npy(np.full(GOOD_SHAPE, np.nan, np.float32)), ERROR, "NaN/Inf"),
        # names and the file system
        Case("cell image ü α 1.tif", _tif(good), OK),
        Case("loop.tif", _symlink("loop.tif"), ERROR, "symbolic link loop"),
        Case("dangling.tif", _symlink("nowhere.tif"), ERROR, "broken symbolic link"),
        Case("folder.tif", lambda path: path.mkdir(), ERROR, "is a folder", "images in this folder"),
        Case("fifo.tif", lambda path: os.mkfifo(path), ERROR, "not a regular file"),
    ]


# ------------------------------------------------------------------------------------------------ checkpoints


class _Payload:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def checkpoint_cases(good: Path, marker: Path) -> list[Case]:
    """Checkpoints that must be refused; `marker` is the file the code-carrying ones try to create."""
    import torch

    raw = good.read_bytes()
    state = torch.load(good, weights_only=True)

    def variant(change: Callable[[dict], None]) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            copy = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
            change(copy)
            torch.save(copy, path)
        return write

    def other_config(c: dict) -> None:
        c["config"]["model"] = {**c["config"]["model"], "depth": c["config"]["model"]["depth"] + 1}

    command = f"touch '{marker}'"
    return [
        Case("empty.pt", _bytes(b""), ERROR, "not a loadable w2s checkpoint"),
        Case("truncated.pt", _half(raw), ERROR, "not a loadable w2s checkpoint"),
        Case("random-bytes.pt", _bytes(np.random.default_rng(1).bytes(4096)), ERROR, "not a loadable w2s checkpoint"),
        Case("code-in-torch-save.pt", lambda p: torch.save({"format": state["format"], "x": _Payload(command)}, p),
             ERROR, "refused: the file's pickle references code (posix.system)"),
        Case("code-in-pickle.pt", _bytes(pickle.dumps(_Payload(command))), ERROR, "weights_only=True) refused"),
        Case("bare-state-dict.pt", lambda p: torch.save(state["model_state"], p), ERROR, "not a w2s checkpoint"),
        Case("no-weights.pt", variant(lambda c: c.pop("model_state")), ERROR, "incomplete w2s checkpoint"),
        Case("no-config.pt", variant(lambda c: c.pop("config")), ERROR, "incomplete w2s checkpoint"),
        Case("other-model-config.pt", variant(other_config), ERROR, "weights do not fit the model config"),
        Case("bad-normalization.pt", variant(lambda c: c.update(normalization={"bogus": 1})), ERROR,
             "invalid normalization"),
    ]


# --------------------------------------------------------------------------------------------- tiny datasets


def write_dataset(root: Path, suffix: str, bad: Path | None = None) -> Path:
    """A small dataset in the layout that reads `suffix` (.tif: paired, .png: 8bit, .npy: normalized), with
    training and validation images; `bad` (a file or link) replaces one training input. Returns the path the
    bad file got (or the root when there is none)."""
    names = {".tif": [f"cell{i}" for i in range(5)], ".png": ["001_0", "002_0", "071_0"],
             ".npy": ["001_0", "002_0", "071_0"]}[suffix]
    folders = {".tif": ("inputs", "targets"), ".png": ("train/avg1", "train/avg400"),
               ".npy": ("normalized/avg1", "normalized/avg400")}[suffix]
    for index, name in enumerate(names):
        for side, folder in enumerate(folders):
            array = good_image(GOOD_SHAPE, seed=2 * index + side)
            path = root / folder / f"{name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            {".tif": _tif(array), ".png": _png((array // 2).astype(np.uint8)),
             ".npy": _npy(array.astype(np.float32))}[suffix](path)
    if bad is None:
        return root
    target = root / folders[0] / f"{names[0]}{suffix}"
    target.unlink()
    place(bad, target)
    return target


def place(bad: Path, target: Path) -> None:
    """Put a copy of the case file `bad` at `target`: a loop stays a loop under its new name, a dangling link
    stays dangling, a folder or a FIFO is made anew."""
    import shutil
    import stat

    if bad.is_symlink():
        os.symlink(target.name if os.readlink(bad) == bad.name else os.readlink(bad), target)
    elif bad.is_dir():
        target.mkdir()
    elif stat.S_ISFIFO(bad.stat().st_mode):
        os.mkfifo(target)
    else:
        shutil.copyfile(bad, target)


# --------------------------------------------------------------------------------------------------- driver


def run_cli(args: list[str]) -> dict[str, Any]:
    from click.testing import CliRunner

    from w2s.cli import cli

    result = CliRunner().invoke(cli, args, prog_name="w2s")
    unclean = result.exception is not None and not isinstance(result.exception, SystemExit)
    return {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
            "exception": "".join(traceback.format_exception(result.exception)) if unclean else ""}


def run_entrypoint(args: list[str]) -> dict[str, Any]:
    """The container entrypoint's `main()` with its stdout/stderr captured (logging and warnings included)."""
    import contextlib

    from submission.inference import main

    out, err = io.StringIO(), io.StringIO()
    exception = ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code, exception = 1, traceback.format_exc()
    return {"exit_code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "exception": exception}


def drive(spec: Path, out: Path) -> None:
    """Run every invocation in the JSON list `spec` ({"id", "kind": cli|entrypoint, "args"}); write results."""
    import warnings

    warnings.simplefilter("always")  # a warning must show in every case that triggers it, not only the first
    results = {}
    for item in json.loads(spec.read_text()):
        runner = run_cli if item["kind"] == "cli" else run_entrypoint
        results[item["id"]] = runner(item["args"])
    out.write_text(json.dumps(results))


def run_driver(invocations: list[dict[str, Any]], work: Path, timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Run `drive` in a fresh interpreter (outside pytest's log and warning capture)."""
    import subprocess

    spec, out = work / "driver-spec.json", work / "driver-results.json"
    spec.write_text(json.dumps(invocations))
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, __file__, str(spec), str(out)], capture_output=True, text=True,
                            timeout=timeout, cwd=work, env=env)
    assert result.returncode == 0, f"driver failed: {result.stderr[-2000:]}"
    return json.loads(out.read_text())


def without_file_override() -> list[str] | None:
    """A command prefix under which permission bits apply: as root (CI runs as root, and chmod 000 does not stop
    root) drop the capabilities that bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) with util-linux's
    setpriv; [] when not root; None when root and setpriv is missing."""
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"] if setpriv else None


def files_under(folder: Path) -> list[Path]:
    """Every file left under `folder` (a missing folder holds none)."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


if __name__ == "__main__":
    drive(Path(sys.argv[1]), Path(sys.argv[2]))
