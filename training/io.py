"""Reading images (TIFF, PNG, NPY) and writing files atomically.

Every reader returns a numpy array and raises `UserError` naming the file when it cannot; every writer
writes to a temporary name beside the target and renames, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile

from training.errors import UserError
from training.resilience import fault_point

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def read_image(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a TIFF, PNG or NPY image as an array of at least two dimensions (last two are Y, X)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    try:
        if suffix in (".tif", ".tiff"):
            array = tifffile.imread(path)
        elif suffix == ".png":
            from skimage.io import imread

            array = imread(path)
        elif suffix == ".npy":
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            raise UserError(f"{path}: unsupported image format '{suffix}' (use {', '.join(IMAGE_SUFFIXES)})")
    except UserError:
        raise
    except Exception as exc:  # every decoder has its own exception types; all mean "unreadable"
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    array = np.asarray(array) if not isinstance(array, np.memmap) else array
    if array.ndim < 2 or min(array.shape) == 0:
        raise UserError(f"{path}: expected an image with at least 2 non-empty axes, got shape {array.shape}")
    if array.dtype.kind not in "uif":
        raise UserError(f"{path}: unsupported pixel type {array.dtype} (need integer or float)")
    return array


def check_finite(array: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse NaN/Inf: silently training on them poisons every later step (the original W2S code hit this)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise UserError(f"{path}: contains {bad} NaN/Inf value(s)")


DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it, rename it onto `path` and fsync the folder,
    so after a crash or power loss `path` is the old file or the new one, never a torn mix. On failure the
    temporary file is deleted; a full disk (or file size limit) becomes a one-line `UserError`."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # the rename is done; some filesystems cannot fsync a folder
            _fsync(path.parent)
    except BaseException as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and (exc.errno in DISK_FULL or exc.errno is None and "written" in str(exc)):
            # numpy's tofile reports a short write as "N requested and M written", without an errno
            reason = os.strerror(exc.errno) if exc.errno else f"{exc}: is the disk full?"
            raise UserError(f"{path}: cannot write ({reason}); nothing was written and any "
                            f"previous {path.name} is intact") from None
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a float32 TIFF with a resolution unit (Grand Challenge's panimg rejects unit NONE)."""
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp) as writer:
            writer.write(np.ascontiguousarray(array, dtype=np.float32), resolution=(1.0, 1.0), resolutionunit=2)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Atomic write in two halves, with `fault_point("write:<name>")` between them: tests kill the process
    there to prove that a torn temporary file is never taken for the real one."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            handle.flush()
            fault_point(f"write:{Path(path).name}")
            handle.write(data[half:])


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
