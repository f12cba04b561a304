"""The four on-disk layouts a dataset can come in, reduced to one list of (noisy, clean) 2-D image pairs.

1. `8bit`:       ROOT/{train,test}/avg{N}/FFF_c.png         (W2S's 8-bit release; ROOT may also hold data/)
2. `normalized`: ROOT/normalized/avg{N}/FFF_c.npy          (W2S's z-scored release)
3. `raw`:        ROOT/ImageFFF/wf_channel{c}.npy           (400 x 512 x 512 uint16 frame stacks)
4. `paired`:     ROOT/inputs/NAME.tif + ROOT/targets/NAME.tif (any dataset; stacks are split into 2-D slices)
5. `noisy`:      ROOT/**/NAME.tif, noisy images only (e.g. the challenge's inputs); no targets, so only
                 self-supervised tasks (`--task n2v`) train on it
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import UserError
from training.io import check_finite, read_image, tiff_shape

W2S_NAME = re.compile(r"^(\d{3})_(\d+)$")
RAW_DIR = re.compile(r"^Image(\d{3})$")
RAW_STACK = re.compile(r"^wf_channel(\d+)\.npy$")
RAW_SIM = "sim_channel{}.npy"
TARGET_LEVEL = "avg400"
SIM_TARGET = "sim"  # --task jdsr: ROOT/{train,test}/sim/FFF_c.png, normalized/sim/FFF_c.npy, ImageFFF/sim_channelC.npy
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class PairSource:
    """Where one (noisy, clean) pair lives on disk, before any pixel is read."""

    name: str  # unique, e.g. "071_2" or "cellA[3]"
    group: str  # unit of splitting: the FOV ("071") or, for the paired layout, the file stem
    fov: int | None
    input_path: Path
    target_path: Path | None  # None: noisy-only data
    slice_index: int | None = None  # index into the flattened leading axes of a paired stack


@dataclass
class ImagePair:
    """A loaded pair of 2-D images in their original units (arrays may be memory-mapped)."""

    source: PairSource
    noisy: np.ndarray
    clean: np.ndarray | None  # None: noisy-only data

    @property
    def name(self) -> str:
        return self.source.name


def detect_layout(root: Path) -> str:
    """Guess the layout from the folder structure; `--layout` overrides."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data directory not found")
    if (root / "inputs").is_dir() and (root / "targets").is_dir():
        return "paired"
    if _eight_bit_root(root) is not None:
        return "8bit"
    if (root / "normalized").is_dir() or (root / TARGET_LEVEL).is_dir() and any((root / TARGET_LEVEL).glob("*.npy")):
        return "normalized"
    if any(RAW_DIR.match(p.name) for p in root.iterdir() if p.is_dir()):
        return "raw"
    if not any(root.iterdir()):
        raise UserError(f"{root}: data directory is empty")
    if any(p.suffix.lower() in TIFF_SUFFIXES for p in root.rglob("*")):
        return "noisy"
    raise UserError(
        f"{root}: unknown data layout (expected {{train,test}}/avgN/*.png, normalized/avgN/*.npy, "
        "ImageFFF/wf_channelC.npy, inputs/ + targets/, or noisy *.tif stacks)"
    )


def discover_pairs(root: str | Path, layout: str, noise_level: str, cache_dir: str = "",
                   progress: bool = True, sim: bool = False) -> tuple[str, list[PairSource]]:
    """List every pair in `root` for the given noise level; returns (resolved layout, pairs sorted by name).

    `sim=True` (--task jdsr) pairs each widefield input with its 2x SIM image instead of avg400.
    """
    root = Path(root)
    try:
        return _discover_pairs(root, layout, noise_level, cache_dir, progress, sim)
    except OSError as exc:  # a folder that cannot be listed (permissions, a link loop, I/O errors)
        raise UserError(f"{exc.filename or root}: {exc.strerror or exc}") from None


def _discover_pairs(root: Path, layout: str, noise_level: str, cache_dir: str,
                    progress: bool, sim: bool) -> tuple[str, list[PairSource]]:
    if layout == "auto":
        layout = detect_layout(root)
    elif not root.is_dir():
        raise UserError(f"{root}: data directory not found")
    if sim and layout in ("paired", "noisy"):
        raise UserError(f"{root}: the {layout} layout has no SIM targets; --task jdsr needs a W2S layout "
                        f"(8bit, normalized or raw) with {SIM_TARGET} images")
    finder = {"8bit": _eight_bit_pairs, "normalized": _normalized_pairs, "paired": _paired_pairs,
              "noisy": _noisy_sources}.get(layout)
    if layout == "raw":
        from training.data.raw import raw_pairs

        pairs = raw_pairs(root, noise_level, cache_dir, progress, sim)
    elif finder is None:
        raise UserError(f"unknown layout '{layout}'")
    elif sim:
        pairs = finder(root, noise_level, SIM_TARGET)
    else:
        pairs = finder(root, noise_level)
    if not pairs:
        raise UserError(f"{root}: no image pairs found for layout '{layout}' and noise level '{noise_level}'")
    return layout, sorted(pairs, key=lambda p: (p.group, -1 if p.slice_index is None else p.slice_index, p.name))


def load_pairs(sources: list[PairSource], check: bool = True, scale: int = 1) -> list[ImagePair]:
    """Read pixels (NPY memory-mapped, the rest into memory); refuse NaN/Inf and mismatched shapes.

    `scale`: the target's size over the input's (2 for --task jdsr's SIM targets)."""
    cache: dict[Path, np.ndarray] = {}
    pairs = []
    for src in sources:
        noisy = _read_2d(src.input_path, src.slice_index, cache)
        clean = None if src.target_path is None else _read_2d(src.target_path, src.slice_index, cache)
        if clean is None:
            if check:
                check_finite(noisy, src.input_path)
            pairs.append(ImagePair(src, noisy, None))
            continue
        if clean.shape != tuple(scale * n for n in noisy.shape):
            expected = "" if scale == 1 else f" ({scale}x the input expected)"
            raise UserError(f"{src.input_path}: shape {noisy.shape} does not match target {src.target_path} "
                            f"{clean.shape}{expected}")
        if check:
            check_finite(noisy, src.input_path)
            check_finite(clean, src.target_path)
        pairs.append(ImagePair(src, noisy, clean))
    return pairs


def fingerprint(sources: list[PairSource]) -> str:
    """A short hash of the file names, sizes and modification times behind a dataset, logged as a tag."""
    digest = hashlib.sha256()
    seen: set[Path] = set()
    for src in sources:
        for path in (src.input_path, src.target_path):
            if path is None or path in seen:
                continue
            seen.add(path)
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _read_2d(path: Path, slice_index: int | None, cache: dict[Path, np.ndarray]) -> np.ndarray:
    if path not in cache:
        array = read_image(path, mmap=True)
        if array.ndim == 3 and path.suffix.lower() == ".png" and array.shape[-1] in (3, 4):
            array = array[..., 0]  # a grayscale image saved as RGB(A): all channels are equal
        if len(cache) >= 2:  # keep the current input and target stack: slices of one stack are consecutive
            cache.pop(next(iter(cache)))
        cache[path] = array
    array = cache[path]
    if slice_index is None:
        if array.ndim != 2:
            raise UserError(f"{path}: expected a 2-D image, got shape {array.shape}")
        return array
    return array.reshape(-1, *array.shape[-2:])[slice_index]


def _eight_bit_root(root: Path) -> Path | None:
    for candidate in (root, root / "data"):
        if any((candidate / split / TARGET_LEVEL).is_dir() for split in ("train", "test")):
            return candidate
    return None


def _w2s_pairs(input_dir: Path, target_dir: Path, suffix: str) -> list[PairSource]:
    if not input_dir.is_dir():
        return []
    if target_dir.name == SIM_TARGET and not target_dir.is_dir():
        raise UserError(f"{target_dir}: SIM target folder not found (--task jdsr needs the SIM images)")
    pairs = []
    for path in sorted(input_dir.glob(f"*{suffix}")):
        match = W2S_NAME.match(path.stem)
        if not match:
            continue
        target = target_dir / path.name
        if not target.is_file():
            raise UserError(f"{path}: no matching target {target}")
        fov = int(match.group(1))
        pairs.append(PairSource(path.stem, f"{fov:03d}", fov, path, target))
    return pairs


def _eight_bit_pairs(root: Path, noise_level: str, target: str = TARGET_LEVEL) -> list[PairSource]:
    base = _eight_bit_root(root)
    if base is None:
        raise UserError(f"{root}: not an 8-bit W2S layout (no train/{TARGET_LEVEL} or test/{TARGET_LEVEL})")
    pairs = []
    for split in ("train", "test"):
        pairs += _w2s_pairs(base / split / noise_level, base / split / target, ".png")
    return pairs


def _normalized_pairs(root: Path, noise_level: str, target: str = TARGET_LEVEL) -> list[PairSource]:
    base = root / "normalized" if (root / "normalized").is_dir() else root
    return _w2s_pairs(base / noise_level, base / target, ".npy")


def _paired_pairs(root: Path, noise_level: str) -> list[PairSource]:
    """Generic layout: inputs/X.tif matched to targets/X.tif by file name; stacks become 2-D slices."""
    suffixes = TIFF_SUFFIXES
    for folder in ("inputs", "targets"):
        if not (root / folder).is_dir():
            raise UserError(f"{root}: not a paired layout (no {folder}/ folder)")
    inputs = {p.stem: p for p in sorted((root / "inputs").iterdir()) if p.suffix.lower() in suffixes}
    targets = {p.stem: p for p in sorted((root / "targets").iterdir()) if p.suffix.lower() in suffixes}
    unmatched = sorted(set(inputs) ^ set(targets))
    if unmatched:
        name = unmatched[0]
        side = "inputs" if name in inputs else "targets"
        other = "targets" if side == "inputs" else "inputs"
        path = inputs.get(name) or targets[name]
        raise UserError(f"{path}: no file named '{name}' in {root / other} ({len(unmatched)} unmatched in {side}/{other})")
    pairs = []
    for stem, in_path in inputs.items():
        shape = tiff_shape(in_path)
        target_shape = tiff_shape(targets[stem])
        if shape != target_shape:
            raise UserError(f"{in_path}: shape {shape} does not match target {targets[stem]} {target_shape}")
        pairs += _slice_sources(stem, in_path, targets[stem], shape)
    return pairs


def _noisy_sources(root: Path, noise_level: str) -> list[PairSource]:
    """Noisy-only layout: every TIFF under ROOT (any depth), named by its path; stacks become 2-D slices."""
    sources = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()):
        stem = path.relative_to(root).with_suffix("").as_posix()
        sources += _slice_sources(stem, path, None, tiff_shape(path))
    return sources


def _slice_sources(stem: str, path: Path, target: Path | None, shape: tuple[int, ...]) -> list[PairSource]:
    """One source for a 2-D TIFF, one per 2-D slice of a stack (leading axes flattened)."""
    if len(shape) < 2:
        raise UserError(f"{path}: expected an image with at least 2 axes, got shape {shape}")
    if len(shape) == 2:
        return [PairSource(stem, stem, None, path, target)]
    return [PairSource(f"{stem}[{i}]", stem, None, path, target, i) for i in range(int(np.prod(shape[:-2])))]
