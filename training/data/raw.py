"""W2S raw release: build the noise levels from 400-frame stacks once, by streaming, and cache them on disk.

As W2S does: avg1 = frame 249, avgN = mean of frames 0..N-1, target (avg400) = mean of all frames. Shorter
stacks (the embedded demo data) use frame min(249, T-1) and the first min(N, T) frames.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.layouts import RAW_DIR, RAW_SIM, RAW_STACK, TARGET_LEVEL, PairSource
from training.errors import UserError
from training.io import check_finite, save_npy, write_text

AVG1_FRAME = 249
LEVELS = (1, 2, 4, 8, 16)
CHUNK = 16


def raw_pairs(root: Path, noise_level: str, cache_dir: str = "", progress: bool = True,
              sim: bool = False) -> list[PairSource]:
    """Pairs of cached noise levels and avg400, or with `sim` (--task jdsr) ImageFFF/sim_channelC.npy."""
    stacks = []
    for fov_dir in sorted(p for p in root.iterdir() if p.is_dir() and RAW_DIR.match(p.name)):
        for stack in sorted(fov_dir.glob("wf_channel*.npy")):
            match = RAW_STACK.match(stack.name)
            if match:
                stacks.append((int(RAW_DIR.match(fov_dir.name).group(1)), int(match.group(1)), stack))
    if not stacks:
        raise UserError(f"{root}: no ImageFFF/wf_channelC.npy stacks found")
    targets = {(fov, channel): stack.parent / RAW_SIM.format(channel) for fov, channel, stack in stacks}
    missing = [path for path in targets.values() if not path.is_file()] if sim else []
    if missing:
        raise UserError(f"{missing[0]}: SIM target not found (--task jdsr needs {RAW_SIM.format('C')} beside "
                        f"every wf_channelC.npy; {len(missing)} missing)")
    cache = resolve_cache_dir(root, cache_dir)
    todo = [s for s in stacks if not _is_cached(cache, *s)]
    for fov, channel, stack in tqdm(todo, desc="averaging raw stacks (once)", unit="stack", disable=not (todo and progress)):
        build_averages(stack, cache, fov, channel)
    return [
        PairSource(f"{fov:03d}_{channel}", f"{fov:03d}", fov, _cached(cache, fov, channel, noise_level),
                   targets[fov, channel] if sim else _cached(cache, fov, channel, TARGET_LEVEL))
        for fov, channel, _ in stacks
    ]


def resolve_cache_dir(root: Path, cache_dir: str = "") -> Path:
    """`cache_dir` if given, else ROOT/.w2s-cache when writable, else ~/.cache/w2s/<hash of ROOT>."""
    if cache_dir:
        path = Path(cache_dir)
    elif os.access(root, os.W_OK):
        path = root / ".w2s-cache"
    else:
        key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "w2s" / f"{root.name}-{key}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot create cache directory ({exc.strerror})") from None
    return path


def build_averages(stack_path: Path, cache: Path, fov: int, channel: int) -> None:
    """One streaming pass over a memory-mapped stack computes every noise level and the target."""
    try:
        stack = np.load(stack_path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{stack_path}: cannot read stack ({type(exc).__name__}: {exc})") from None
    if stack.ndim != 3 or 0 in stack.shape:
        raise UserError(f"{stack_path}: expected a (frames, Y, X) stack, got shape {stack.shape}")
    frames = stack.shape[0]
    total = np.zeros(stack.shape[1:], dtype=np.float64)
    levels: dict[str, np.ndarray] = {}
    avg1_index = min(AVG1_FRAME, frames - 1)
    for start in range(0, frames, CHUNK):
        block = np.asarray(stack[start:start + CHUNK], dtype=np.float64)
        check_finite(block, stack_path)
        for offset, frame in enumerate(block):
            index = start + offset
            total += frame
            if index == avg1_index:
                levels["avg1"] = frame.astype(np.float32)
            for n in LEVELS[1:]:
                if index + 1 == min(n, frames):
                    levels[f"avg{n}"] = (total / (index + 1)).astype(np.float32)
    levels[TARGET_LEVEL] = (total / frames).astype(np.float32)
    for level, image in levels.items():
        save_npy(_cached(cache, fov, channel, level), image)
    # the marker is written last, so an interrupted build is redone rather than half-used
    write_text(_marker(cache, fov, channel), json.dumps(_stamp(stack_path)))


def _stamp(stack_path: Path) -> dict:
    stat = stack_path.stat()
    return {"source": stack_path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _is_cached(cache: Path, fov: int, channel: int, stack_path: Path) -> bool:
    marker = _marker(cache, fov, channel)
    try:
        return json.loads(marker.read_text()) == _stamp(stack_path)
    except (OSError, ValueError):
        return False


def _marker(cache: Path, fov: int, channel: int) -> Path:
    return cache / f"Image{fov:03d}_c{channel}.json"


def _cached(cache: Path, fov: int, channel: int, level: str) -> Path:
    return cache / f"Image{fov:03d}_c{channel}_{level}.npy"
