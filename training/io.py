"""Reading images (TIFF, PNG, NPY) and writing files atomically.

Every reader returns a numpy array and raises `UserError` naming the file when it cannot; every writer
writes to a temporary name beside the target and renames, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile

from training.errors import UserError, first_line
from training.resilience import fault_point

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def read_image(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a TIFF, PNG or NPY image as an array of at least two dimensions (last two are Y, X).

    With `mmap`, NPY files and uncompressed TIFFs are memory-mapped rather than read, so an input larger than
    memory can be processed slice by slice; other files are read whole.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if check_file(path).st_size == 0:
        raise UserError(f"{path}: file is empty")
    try:
        with quiet_decoders():
            if suffix in (".tif", ".tiff"):
                with tifffile.TiffFile(path) as tif:
                    check_tiff_complete(tif, path)
                    array = _tiff_memmap(tif, path) if mmap else None
                    if array is None:
                        array = tif.asarray()
            elif suffix == ".png":
                from skimage.io import imread

                array = imread(path)
            elif suffix == ".npy":
                array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            else:
                raise UserError(f"{path}: unsupported image format '{suffix}' (use {', '.join(IMAGE_SUFFIXES)})")
    except UserError:
        raise
    except OSError as exc:
        if exc.strerror:  # permission denied, I/O error: say so plainly
            raise UserError(f"{path}: cannot read ({exc.strerror})") from None
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # every decoder has its own exception types; all mean "unreadable"
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {first_line(exc)})") from None
    array = np.asarray(array) if not isinstance(array, np.memmap) else array
    if array.ndim < 2 or min(array.shape) == 0:
        raise UserError(f"{path}: expected an image with at least 2 non-empty axes, got shape {array.shape}")
    if array.dtype.kind not in "uif":
        raise UserError(f"{path}: unsupported pixel type {array.dtype} (need integer or float)")
    return array


def check_file(path: Path) -> os.stat_result:
    """Stat `path` and name the real problem: missing, a broken link, a link loop, a folder, a pipe."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise UserError(f"{path}: broken symbolic link (target {os.readlink(path)} does not exist)") from None
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path}: symbolic link loop") from None
        raise UserError(f"{path}: cannot access ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise UserError(f"{path}: not a regular file")
    return info


def check_tiff_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse a TIFF whose header points past the end of the file (truncated, or a header with no data)
    before any pixel buffer is allocated: a 20000 x 20000 header on a 4 kB file must not cost 800 MB."""
    if not tif.series:
        raise UserError(f"{path}: TIFF holds no image")
    size = path.stat().st_size
    series = tif.series[0]
    for page in series.pages:
        if page is None:
            continue
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
        if ends and max(ends) > size:
            raise UserError(f"{path}: truncated: the header declares {series.dtype} pixels of shape "
                            f"{tuple(series.shape)} up to byte {max(ends)}, but the file has {size} bytes")


@contextlib.contextmanager
def quiet_decoders() -> Iterator[None]:
    """Decoders log and warn about the files they read; the caller reports the outcome as one line instead."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def tiff_shape(path: Path) -> tuple[int, ...]:
    """The shape of a TIFF's first series, from its header alone."""
    if check_file(path).st_size == 0:
        raise UserError(f"{path}: file is empty")
    try:
        with quiet_decoders(), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise UserError(f"{path}: TIFF holds no image")
            return tuple(tif.series[0].shape)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot read TIFF ({type(exc).__name__}: {first_line(exc)})") from None



def _tiff_memmap(tif: tifffile.TiffFile, path: Path) -> np.ndarray | None:
    """The first series as a read-only memory map when its pixels are stored uncompressed in one block."""
    series = tif.series[0]
    offset = series.dataoffset
    if offset is None or tif.filehandle.is_file is False:
        return None
    return np.memmap(path, dtype=series.dtype.newbyteorder(tif.byteorder), mode="r", offset=offset,
                     shape=tuple(series.shape))


def check_finite(array: np.ndarray, path: str | os.PathLike, block: int = 1 << 22) -> None:
    """Refuse NaN/Inf: silently training on them poisons every later step (the original W2S code hit this).

    Checked in blocks of rows, so a memory-mapped input is never loaded whole.
    """
    if array.dtype.kind != "f":
        return
    rows = array.reshape(-1, array.shape[-1])
    step = max(1, block // max(1, rows.shape[1]))
    bad = 0
    for start in range(0, rows.shape[0], step):
        chunk = np.asarray(rows[start:start + step])
        bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
    if bad:
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


@contextlib.contextmanager
def tiff_writer_memmap(path: str | os.PathLike, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A float32 TIFF (with a resolution unit, as `write_tiff`) mapped into memory to be filled slice by slice,
    so an output larger than memory never has to exist in it; atomic like every writer here."""
    with atomic_path(path) as tmp:
        array = tifffile.memmap(tmp, shape=tuple(shape), dtype=np.float32, resolution=(1.0, 1.0), resolutionunit=2)
        try:
            yield array
            array.flush()
        finally:
            del array


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
