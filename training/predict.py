"""Apply a trained model to images in their original units: normalize, run the network, invert.

Shared by training (validation), evaluation, `w2s predict` and the challenge container:

- `predict_image`: one 2-D image in a single forward pass (validation during training).
- `tiled_predict`: one 2-D image of any size in overlapping tiles, batched, blended with smooth weights;
  memory is bounded by tile and batch size, not by the image.
- `predict_stack`: 2-D images and stacks (leading axes are slices, the last two are Y, X), slice by slice.
- `resolve_model`: a checkpoint path, a run folder, `runs/latest`, or an MLflow URI -> a loaded model.

How tiling stays faithful to whole-image prediction: the image is normalized with statistics of the WHOLE
image (never per tile), padded once to a multiple of 2**depth exactly as the U-Net pads internally, and cut
into tiles whose origins are multiples of 2**depth (so max-pooling sees the same grid). An output pixel of a
tile differs from the whole-image output only if it lies within the network's receptive-field radius of a
tile edge that is not an image edge. Tiles overlap by at least that radius (`receptive_radius`), and each
tile's weight ramps from ~0 at such an edge to 1 across the overlap (a sin^2 ramp; two neighbours' ramps sum
to 1). So every pixel outside the overlap bands ("seams") equals the whole-image prediction to floating-point
accuracy, and inside the bands the result is a blend of two predictions that each saw only part of the
context; the measured seam error is documented in the README ("Prediction").
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from training.config import UNetConfig
from training.data.normalization import Normalization
from training.errors import UserError, first_line

DEFAULT_TILE = 256
DEFAULT_BATCH_SIZE = 4
URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")
CHECKPOINT_CANDIDATES = ("extra_files/best.pt", "best.pt", "checkpoints/best.pt")


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict_image(model: torch.nn.Module, normalization: Normalization, image: np.ndarray,
                  device: torch.device | None = None, amp: bool = True) -> np.ndarray:
    """Denoise one 2-D image whole; the output is float32 in the input's units."""
    device = device or next(model.parameters()).device
    stats = normalization.stats(image)
    x = torch.from_numpy(normalization.normalize(image, stats))[None, None].to(device)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
        y = model(x)
    return normalization.denormalize(y.float()[0, 0].cpu().numpy(), stats)


# ----------------------------------------------------------------------------------------------- tiling


def receptive_radius(config: UNetConfig) -> int:
    """A conservative bound (pixels) on how far an input pixel can influence an output pixel.

    Each 3x3 conv at scale s adds s, each 2x2 max-pool at scale s adds s, each bilinear x2 upsampling from
    scale s adds s. Depth 3 (the default) gives 65.
    """
    radius, scale = 0, 1
    for _ in range(config.depth):
        radius += 2 * scale + scale  # two convs, then the pool
        scale *= 2
    radius += 2 * scale  # bottleneck
    for _ in range(config.depth):
        radius += scale  # upsample
        scale //= 2
        radius += 2 * scale  # decoder convs
    return radius + (0 if config.scale == 1 else 2)  # a 2x head: two 3x3 convs, at 1x and at 2x


def default_overlap(config: UNetConfig) -> int:
    """The receptive radius rounded up to the pooling grid: pixels outside the seams are then exact."""
    multiple = 2**config.depth
    return int(math.ceil(receptive_radius(config) / multiple) * multiple)


def tile_starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile origins along one axis of a padded length: stride tile - overlap, last tile flush with the end.

    All origins are multiples of `multiple` when `tile`, `overlap` and `length` are.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(s - s % multiple for s in starts))


def blend_window(tile: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weights of one tile: 1 in the middle, a sin^2 ramp over `overlap` pixels at interior edges.

    The ramps of two neighbours that overlap by exactly `overlap` sum to 1; every weight is > 0.
    """
    weights = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        if ramp_start:
            weights[:overlap] = ramp
        if ramp_end:
            weights[tile - overlap:] = ramp[::-1]
    return weights


@torch.no_grad()
def tiled_predict(model: torch.nn.Module, normalization: Normalization, image: np.ndarray, tile: int = DEFAULT_TILE,
                  overlap: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | None = None,
                  amp: bool = True, progress: bool = False) -> np.ndarray:
    """Denoise one 2-D image of any size in overlapping tiles; float32 output in the input's units.

    A 2x model (--task jdsr) returns twice the size: tiles and blend weights are laid out on the input's grid
    and scaled by 2 on the output's.
    `tile` and `overlap` are rounded up to multiples of 2**depth; `overlap=None` uses `default_overlap`.
    Images no larger than a tile are predicted in one pass (identical to `predict_image`).
    """
    if image.ndim != 2:
        raise ValueError(f"tiled_predict expects a 2-D image, got shape {image.shape}")
    device = device or next(model.parameters()).device
    config: UNetConfig = model.config
    multiple = 2**config.depth
    tile = _round_up(max(int(tile), multiple), multiple)
    overlap = default_overlap(config) if overlap is None else _round_up(max(int(overlap), 0), multiple)
    if overlap >= tile:
        raise UserError(f"tile size {tile} is too small for a tile overlap of {overlap} pixels (both rounded to "
                        f"multiples of {multiple}; the default overlap covers the network's receptive field): "
                        f"use a tile of at least {2 * overlap}, or a smaller overlap")
    height, width = image.shape

    stats = normalization.stats(image)  # whole-image statistics: tiles must share one normalization
    normalized = _pad_like_model(normalization.normalize(image, stats), multiple)
    padded_h, padded_w = normalized.shape
    tile_h, tile_w = min(tile, padded_h), min(tile, padded_w)
    ys = tile_starts(padded_h, tile_h, overlap, multiple)
    xs = tile_starts(padded_w, tile_w, overlap, multiple)
    s = config.scale
    weights_y = [blend_window(s * tile_h, s * overlap, y > 0, y + tile_h < padded_h) for y in ys]
    weights_x = [blend_window(s * tile_w, s * overlap, x > 0, x + tile_w < padded_w) for x in xs]
    # weights are separable and the tiles form a grid, so their sum is an outer product of two 1-D sums
    sum_y, sum_x = np.zeros(s * padded_h), np.zeros(s * padded_w)
    for y, w in zip(ys, weights_y):
        sum_y[s * y:s * (y + tile_h)] += w
    for x, w in zip(xs, weights_x):
        sum_x[s * x:s * (x + tile_w)] += w

    output = np.zeros((s * padded_h, s * padded_w), dtype=np.float32)
    positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    use_amp = amp and device.type == "cuda"
    batches = range(0, len(positions), max(1, int(batch_size)))
    if progress and len(batches) > 1:
        from tqdm import tqdm

        batches = tqdm(batches, desc="tiles", unit="batch", leave=False, dynamic_ncols=True)
    for start in batches:
        chunk = positions[start:start + max(1, int(batch_size))]
        batch = np.stack([normalized[ys[i]:ys[i] + tile_h, xs[j]:xs[j] + tile_w] for i, j in chunk])
        x = torch.from_numpy(batch)[:, None].to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            y = model(x)
        y = y.float()[:, 0].cpu().numpy()
        for (i, j), pred in zip(chunk, y):
            top, left = s * ys[i], s * xs[j]
            weight = np.outer(weights_y[i] / sum_y[top:top + s * tile_h],
                              weights_x[j] / sum_x[left:left + s * tile_w]).astype(np.float32)
            output[top:top + s * tile_h, left:left + s * tile_w] += weight * pred
    return normalization.denormalize(output[:s * height, :s * width], stats)


def seam_mask(shape: tuple[int, int], config: UNetConfig, tile: int = DEFAULT_TILE,
              overlap: int | None = None) -> np.ndarray:
    """True where more than one tile contributes (the overlap bands) for a 2-D image of `shape`."""
    multiple = 2**config.depth
    tile = _round_up(max(int(tile), multiple), multiple)
    overlap = default_overlap(config) if overlap is None else _round_up(max(int(overlap), 0), multiple)
    padded = [_round_up(n, multiple) for n in shape]
    masks = []
    for length, size in zip(padded, (min(tile, padded[0]), min(tile, padded[1]))):
        count = np.zeros(length, dtype=int)
        for start in tile_starts(length, size, overlap, multiple):
            count[start:start + size] += 1
        masks.append(count > 1)
    return (masks[0][:, None] | masks[1][None, :])[: shape[0], : shape[1]]


def predict_stack(model: torch.nn.Module, normalization: Normalization, array: np.ndarray, tile: int = DEFAULT_TILE,
                  overlap: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | None = None,
                  amp: bool = True, progress: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Denoise a 2-D image or a stack (leading axes are slices, the last two Y, X), slice by slice.

    Each slice is normalized with its own statistics, as every training image was. float32, same shape (Y and
    X doubled for a 2x model). `out` (e.g. a memory-mapped output file) receives the result, so with a
    memory-mapped input only one slice is ever held in memory.
    """
    if array.ndim < 2:
        raise UserError(f"expected an image with at least 2 axes, got shape {array.shape}")
    slices = array.reshape(-1, *array.shape[-2:])
    scale = model.config.scale
    shape = (*array.shape[:-2], scale * array.shape[-2], scale * array.shape[-1])
    if out is not None and (out.shape != shape or out.dtype != np.float32):
        raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
    output = (np.empty((len(slices), *shape[-2:]), dtype=np.float32) if out is None
              else out.reshape(len(slices), *shape[-2:]))
    indices = range(len(slices))
    if progress and len(slices) > 1:
        from tqdm import tqdm

        indices = tqdm(indices, desc="slices", unit="slice", leave=False, dynamic_ncols=True)
    for index in indices:
        output[index] = tiled_predict(model, normalization, slices[index], tile, overlap, batch_size, device, amp,
                                      progress=progress)
    return output.reshape(shape)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_like_model(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom/right to a multiple of 2**depth with the mode the U-Net itself uses (see UNet.forward)."""
    height, width = image.shape
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return np.ascontiguousarray(image, dtype=np.float32)
    mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode=mode)[0, 0].numpy()


# ------------------------------------------------------------------------------------------ model lookup


def is_model_uri(spec: str) -> bool:
    return str(spec).startswith(URI_SCHEMES)


def resolve_model(spec: str | Path, tracking_uri: str = "", device: str | torch.device = "cpu"):
    """Load a model from a checkpoint file, a run folder, a `runs/latest` file or an MLflow URI.

    MLflow URIs (`runs:/<id>/model`, `models:/<name>@<alias>`, `models:/<name>/<version>`,
    `runs:/<id>/checkpoints/best.pt`, `runs:/<id>`) are downloaded and the safe w2s checkpoint inside
    (`extra_files/best.pt` of a logged model) is loaded with `weights_only=True`; the pickled MLflow PyTorch
    model is never unpickled. Returns `training.checkpoint.LoadedModel`.
    """
    from training.checkpoint import load_model

    spec = str(spec)
    if not is_model_uri(spec):
        return load_model(local_checkpoint_path(spec), device)
    uri = spec.rstrip("/")
    if uri.startswith("runs:/") and uri.count("/") == 1:  # runs:/<id> -> the run's checkpoint artifact
        uri += "/checkpoints/best.pt"
    with tempfile.TemporaryDirectory(prefix="w2s-model-") as tmp:
        with mlflow_uri(tracking_uri):
            import mlflow
            from mlflow.exceptions import MlflowException

            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            except MlflowException as exc:
                raise UserError(f"{spec}: cannot fetch the model from MLflow at {_current_uri()} "
                                f"({first_line(exc)})") from None
            except OSError as exc:
                raise UserError(f"{spec}: cannot fetch the model from MLflow ({first_line(exc)})") from None
        path = local if local.is_file() else next((local / c for c in CHECKPOINT_CANDIDATES if (local / c).is_file()), None)
        if path is None:
            raise UserError(f"{spec}: the MLflow artifact holds no w2s checkpoint (looked for "
                            f"{', '.join(CHECKPOINT_CANDIDATES)}); try runs:/<run id>/checkpoints/best.pt")
        loaded = load_model(path, device)
    return loaded


def local_checkpoint_path(spec: str | Path) -> Path:
    """A checkpoint file, a run folder (-> best.pt), or a text file such as runs/latest naming a run folder."""
    path = Path(spec)
    if path.is_file() and path.suffix == "" and path.stat().st_size < 4096:
        try:
            target = Path(path.read_text().strip())
        except (OSError, UnicodeDecodeError):
            target = None
        if target is not None and str(target) and target.is_dir():
            path = target
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise UserError(f"{path}: model checkpoint not found")
    return path


@contextlib.contextmanager
def mlflow_uri(tracking_uri: str = "") -> Iterator[str]:
    """Point MLflow's tracking and registry at `tracking_uri` (default: $MLFLOW_TRACKING_URI or ./mlflow.db)
    for the duration of the block, then put back what was there (MLflow mirrors both in the environment)."""
    import mlflow

    from training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    previous = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(previous["MLFLOW_REGISTRY_URI"])
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _current_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()



__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_TILE", "blend_window", "default_overlap", "is_model_uri",
           "local_checkpoint_path", "mlflow_uri", "predict_image", "predict_stack", "receptive_radius",
           "resolve_model", "seam_mask", "select_device", "tile_starts", "tiled_predict"]
