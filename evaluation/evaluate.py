"""Score a model, the noisy input, classical baselines and other tools' saved outputs in one table.

Callable from Python:

    from evaluation.evaluate import evaluate_model, score_predictions
    result = evaluate_model("runs/latest")                       # the run's held-out split, its own data
    result = score_predictions({"VST+BM3D": "../shared/data/w2s-8bit/peers/vst-bm3d"},
                               "../shared/data/w2s-8bit", split="val")

Nothing is written until every image of the split has been scored; any bad input (missing or unreadable
file, shape mismatch, NaN/Inf, empty split) raises `UserError` naming the file instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from evaluation.baselines import TunedBaseline, select_baselines, tune
from evaluation.metrics import METRICS, score_image
from evaluation.report import PANEL_DIR, markdown_table, panel_filename, summarize, write_panel, write_reports
from training.checkpoint import LoadedModel, code_version
from training.config import TrainConfig
from training.data.layouts import PairSource, discover_pairs, load_pairs
from training.data.normalization import to_input_grid
from training.data.split import Split, split_by_fov
from training.errors import UserError
from training.io import IMAGE_SUFFIXES, check_finite, read_image, write_tiff
from training.ensemble import with_tta
from training.superres import upsample
from training.predict import (DEFAULT_BATCH_SIZE, DEFAULT_TILE, default_overlap, is_model_uri, resolve_model,
                              select_device, tiled_predict)

NOISY = "noisy input"
MODEL = "U-Net"
MODEL_TTA = "U-Net +TTA"
SPLITS = ("auto", "test", "val")
TUNE_SPLITS = ("auto", "val", "train")
DEFAULTS = TrainConfig()


@dataclass
class EvaluationData:
    root: Path
    layout: str
    noise_level: str
    split_name: str
    sources: list[PairSource]
    split: Split
    val_fovs: str
    test_fovs: str
    scale: int = 1  # target size over input size: 2 for --task jdsr (SIM targets)


@dataclass
class Method:
    name: str
    kind: str  # "input" | "model" | "baseline" | "predictions"
    predict: Callable[[PairSource, np.ndarray], np.ndarray]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    table: str
    out_dir: Path | None
    files: dict[str, Path]
    mlflow_message: str = ""

    def mean(self, method: str, metric: str) -> float:
        return self.summary["methods"][method]["mean"][metric]


# --------------------------------------------------------------------------------------------- the data


def held_out_split(split: Split) -> str:
    """A run's held-out split: test when its data has test images, else validation."""
    return "test" if split.test else "val"


def select_data(root: str | Path, split: str = "auto", noise_level: str = "avg1", layout: str = "auto",
                val_fovs: str = DEFAULTS.val_fovs, test_fovs: str = DEFAULTS.test_fovs,
                cache_dir: str = "", scale: int = 1) -> EvaluationData:
    """The images of one split; `scale` 2 pairs each input with its 2x SIM target (--task jdsr)."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}': expected {' | '.join(SPLITS)}")
    root = Path(root)
    layout, sources = discover_pairs(root, layout, noise_level, cache_dir, sim=scale != 1)
    if layout == "noisy":
        raise UserError(f"{root}: noisy images only, no targets to score predictions against")
    groups = split_by_fov(sources, val_fovs, test_fovs)
    name = held_out_split(groups) if split == "auto" else split
    chosen = getattr(groups, name)
    if not chosen:
        which = {"test": f"test FOVs {test_fovs}", "val": f"validation FOVs {val_fovs}"}[name]
        raise UserError(f"{root}: the {name} split is empty ({which} match none of its {len(sources)} images)")
    return EvaluationData(root, layout, noise_level, name, chosen, groups, val_fovs, test_fovs, scale)


# ------------------------------------------------------------------------------------------ the methods


def noisy_method(scale: int = 1) -> Method:
    """The input itself; for a 2x target, bicubic-upsampled to the target's grid."""
    if scale == 1:
        return Method(NOISY, "input", lambda source, noisy: noisy)
    return Method(NOISY, "input", lambda source, noisy: upsample(noisy, scale), {"upsampled": f"bicubic {scale}x"})


def model_method(loaded: LoadedModel, source: str, tile: int = DEFAULT_TILE, overlap: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", amp: bool = True,
                 save_dir: str | Path | None = None, name: str = MODEL, tta: bool = False) -> Method:
    torch_device = select_device(device)
    if torch_device.type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: CUDA is not available on this machine")
    loaded.model.to(torch_device).eval()
    overlap = default_overlap(loaded.config.model) if overlap is None else overlap
    network = with_tta(loaded.model, tta)

    def predict(pair: PairSource, noisy: np.ndarray) -> np.ndarray:
        output = tiled_predict(network, loaded.normalization, noisy, tile, overlap, batch_size, torch_device, amp)
        if not np.isfinite(output).all():
            raise UserError(f"{source}: the model's prediction for {pair.name} contains NaN/Inf")
        if save_dir is not None:
            write_tiff(Path(save_dir) / f"{pair.name}.tif", output)
        return output

    checkpoint = loaded.checkpoint
    details = {"source": source, "mlflow_run_id": checkpoint.get("mlflow_run_id"), "epoch": checkpoint.get("epoch"),
               "best_metrics": checkpoint.get("best_metrics"), "run_dir": checkpoint.get("run_dir"),
               "code_version": checkpoint.get("code_version"), "tile": tile, "overlap": overlap,
               "batch_size": batch_size, "device": str(torch_device), "tta": tta, "model_config": checkpoint["config"].get("model")}
    return Method(name, "model", predict, details)


def prediction_key(source: PairSource) -> tuple[str, int | None]:
    """Saved outputs are matched by file name: `071_0.png` for W2S pairs, the input's stem for stacks."""
    if source.slice_index is not None:
        return source.input_path.stem, source.slice_index
    return source.name, None


def predictions_method(name: str, directory: str | Path, sources: list[PairSource], scale: int = 1) -> Method:
    """A folder of another tool's outputs, one file per target (any of .tif .tiff .png .npy); with `scale` 2
    (SIM targets) each output must be twice the input's size."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: predictions folder not found (for '{name}')")
    paths: dict[str, Path] = {}
    missing = []
    for source in sources:
        stem, _ = prediction_key(source)
        if stem in paths:
            continue
        found = [directory / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES if (directory / f"{stem}{suffix}").is_file()]
        if not found:
            missing.append(directory / f"{stem}{IMAGE_SUFFIXES[0]}")
        else:
            paths[stem] = found[0]
    if missing:
        raise UserError(f"{missing[0].with_suffix('.*')}: missing prediction for target {missing[0].stem} "
                        f"({len(missing)} of the split's {len({prediction_key(s)[0] for s in sources})} targets "
                        f"have no file in {directory})")
    cache: dict[Path, np.ndarray] = {}

    def predict(source: PairSource, noisy: np.ndarray) -> np.ndarray:
        stem, index = prediction_key(source)
        path = paths[stem]
        if path not in cache:
            cache.clear()
            array = read_image(path, mmap=True)
            if array.ndim == 3 and path.suffix.lower() == ".png" and array.shape[-1] in (3, 4):
                array = array[..., 0]  # grayscale saved as RGB(A)
            cache[path] = array
        array = cache[path]
        expected = tuple(scale * n for n in noisy.shape)
        if index is not None:
            if array.shape[-2:] != expected or int(np.prod(array.shape[:-2])) <= index:
                raise UserError(f"{path}: shape {array.shape} does not match the target stack "
                                f"{source.target_path} (slice {index} of {expected} images)")
            array = array.reshape(-1, *array.shape[-2:])[index]
        if array.shape != expected:
            raise UserError(f"{path}: shape {array.shape} does not match target {source.target_path} {expected}")
        array = np.asarray(array, dtype=np.float32)
        check_finite(array, path)
        return array

    return Method(name, "predictions", predict, {"directory": str(directory.resolve())})


def baseline_methods(spec: str, data: EvaluationData, tune_split: str = "auto", tune_images: int = 3,
                     tune_metric: str = "si_psnr", crop: int = 192,
                     progress: bool = True) -> tuple[list[Method], dict[str, Any], dict[str, Any]]:
    """Tune each requested baseline on a few images of a split that is not the one being reported.

    For 2x targets (--task jdsr) each baseline denoises, then upsamples bicubically ("denoise then upsample");
    it is tuned against the target averaged down to the input's grid (2x2 block means)."""
    chosen = select_baselines(spec)
    if not chosen:
        return [], {}, {}
    if tune_split not in TUNE_SPLITS:
        raise UserError(f"unknown tuning split '{tune_split}': expected {' | '.join(TUNE_SPLITS)}")
    if tune_split == "auto":
        tune_split = "val" if data.split_name == "test" else "train"
    if tune_split == data.split_name:
        raise UserError(f"baselines cannot be tuned on the split being reported ({tune_split}); "
                        "use --tune-split val or train")
    pool = getattr(data.split, tune_split)
    if not pool:
        raise UserError(f"{data.root}: no {tune_split} images to tune the baselines on (use --baselines none)")
    step = max(1, len(pool) // max(1, tune_images))
    picked = pool[::step][: max(1, tune_images)]
    pairs = [(p.noisy, to_input_grid(p.clean, p.noisy.shape)) for p in load_pairs(picked, scale=data.scale)]
    tuned: list[TunedBaseline] = []
    bar = tqdm(chosen, desc=f"tuning baselines on {len(picked)} {tune_split} images", unit="baseline",
               disable=not progress, leave=False, dynamic_ncols=True)
    for baseline in bar:
        tuned.append(tune(baseline, pairs, tune_metric, crop))
    scale = data.scale
    suffix = "" if scale == 1 else f" + bicubic {scale}x"
    methods = [Method(t.label + suffix, "baseline", (lambda tb: lambda source, noisy: upsample(tb(noisy), scale))(t),
                      {"baseline": t.key, "params": t.params()}) for t in tuned]
    record = {t.label: {"key": t.key, "label": t.label, "param": t.baseline.param, "value": t.value,
                        "grid_scores": t.scores, "note": t.baseline.note} for t in tuned}
    tuning = {"split": tune_split, "images": [p.name for p in picked], "crop": crop, "metric": tune_metric}
    return methods, record, tuning


# ------------------------------------------------------------------------------------------- the runner


def run_evaluation(data: EvaluationData, methods: list[Method], out_dir: str | Path | None = None, panels: int = 3,
                   progress: bool = True, extra: dict[str, Any] | None = None) -> EvaluationResult:
    """Score every method on every image of the split; write reports only when all are scored."""
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"two methods are named '{duplicates[0]}': give --predictions NAME=DIR distinct names")
    rows: list[dict[str, Any]] = []
    panel_data = []
    bar = tqdm(data.sources, desc=f"scoring {data.split_name} images", unit="image", disable=not progress,
               dynamic_ncols=True)
    for index, source in enumerate(bar):
        pair = load_pairs([source], scale=data.scale)[0]
        noisy = np.asarray(pair.noisy, dtype=np.float32)
        clean = np.asarray(pair.clean, dtype=np.float32)
        predictions, scores = {}, {}
        for method in methods:
            prediction = method.predict(source, noisy)
            scores[method.name] = score_image(clean, prediction)
            rows.append({"image": source.name, "method": method.name, **scores[method.name]})
            if index < panels and method.kind != "input":
                predictions[method.name] = prediction
        if index < panels:
            panel_data.append((source.name, noisy, predictions, clean, scores))
    summary = build_summary(data, methods, rows, extra or {})
    table = markdown_table(summary)
    files: dict[str, Path] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name, noisy, predictions, clean, scores in panel_data:
            path = out_dir / PANEL_DIR / panel_filename(name)
            write_panel(path, name, noisy, predictions, clean, scores)
        files = write_reports(out_dir, rows, summary, table)
    return EvaluationResult(rows, summary, table, out_dir, files)


def build_summary(data: EvaluationData, methods: list[Method], rows: list[dict[str, Any]],
                  extra: dict[str, Any]) -> dict[str, Any]:
    per_method = summarize(rows, [m.name for m in methods])
    for method in methods:
        per_method[method.name] = {"kind": method.kind, **per_method[method.name],
                                   **{k: v for k, v in method.details.items()
                                      if k in ("directory", "params", "upsampled")}}
    scored = {r["image"] for r in rows}
    return {
        "data": {"root": str(data.root.resolve()), "layout": data.layout, "noise_level": data.noise_level,
                 "split": data.split_name, "val_fovs": data.val_fovs, "test_fovs": data.test_fovs,
                 "n_images": len(data.sources), "images": [s.name for s in data.sources]},
        "n_images_scored": len(scored),
        "metrics": list(METRICS),
        "methods": per_method,
        **extra,
        "code_version": code_version(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------- the entry points


def evaluate_model(model: str | Path | LoadedModel, data: str | Path | None = None, split: str = "auto",
                   noise_level: str | None = None, layout: str | None = None,
                   predictions: dict[str, str | Path] | None = None, baselines: str = "all", tune_split: str = "auto",
                   tune_images: int = 3, tune_metric: str = "si_psnr", out_dir: str | Path | None = None,
                   panels: int = 3, tile: int = DEFAULT_TILE, overlap: int | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", amp: bool = True,
                   tracking_uri: str = "", log_mlflow: bool = True, save_predictions: bool = False,
                   progress: bool = True, tta: bool = False) -> EvaluationResult:
    """Evaluate a model (checkpoint, run folder, runs/latest or MLflow URI) on its held-out split.

    `tta` adds a row for the model averaged over the 8 flips/turns of its input (training/ensemble.py).

    Data, layout, noise level and FOV split default to the ones the model was trained with. When the model
    came from an MLflow run and is scored on that run's own held-out split, the scores are logged on the run
    (see evaluation/tracking.py).
    """
    source = str(model) if not isinstance(model, LoadedModel) else "<in-memory model>"
    loaded = model if isinstance(model, LoadedModel) else resolve_model(model, tracking_uri)
    checkpoint, config = loaded.checkpoint, loaded.config
    trained_root = checkpoint.get("data_root")
    if data is None:
        if not trained_root:
            raise UserError(f"{source}: the checkpoint does not say what data it was trained on; pass --data")
        data = trained_root
    same_data = bool(trained_root) and _same_path(data, trained_root)
    if layout is None:
        layout = checkpoint.get("data_layout", "auto") if same_data else "auto"
    noise_level = noise_level or checkpoint.get("noise_level") or config.noise_level
    selected = select_data(data, split, noise_level, layout, config.val_fovs, config.test_fovs, config.cache_dir,
                           config.model.scale)
    methods = [noisy_method(config.model.scale)]
    if out_dir is None and save_predictions:
        raise UserError("save_predictions needs an output folder")
    methods.append(model_method(loaded, source, tile, overlap, batch_size, device, amp,
                                Path(out_dir) / "predictions" if save_predictions else None))
    if tta:
        methods.append(model_method(loaded, source, tile, overlap, batch_size, device, amp, name=MODEL_TTA, tta=True))
    baseline_list, baseline_record, tuning = baseline_methods(baselines, selected, tune_split, tune_images,
                                                              tune_metric, progress=progress)
    methods += baseline_list
    for name, directory in (predictions or {}).items():
        methods.append(predictions_method(name, directory, selected.sources, selected.scale))
    extra: dict[str, Any] = {"model": methods[1].details}
    if baseline_record:
        extra.update(baselines=baseline_record, baseline_tuning=tuning)
    result = run_evaluation(selected, methods, out_dir, panels, progress, extra)

    run_id = checkpoint.get("mlflow_run_id")
    held_out = held_out_split(selected.split)
    if not log_mlflow:
        result.mlflow_message = "not logged to MLflow (--no-mlflow)"
    elif not run_id:
        result.mlflow_message = "not logged to MLflow: the model has no training run"
    elif not (same_data and selected.split_name == held_out and noise_level == checkpoint.get("noise_level")):
        result.mlflow_message = (f"not logged to MLflow: test_* metrics are only logged for the run's own data, "
                                 f"held-out split ({held_out}) and noise level")
    else:
        from evaluation.tracking import log_to_training_run, tracking_uri_for

        # a model fetched from MLflow belongs to the store it came from; a file, to the store it was trained with
        uri = _resolve(tracking_uri) if is_model_uri(source) else tracking_uri_for(checkpoint, tracking_uri)
        result.mlflow_message = log_to_training_run(run_id, uri, result.summary, MODEL, result.out_dir)
    return result


def score_predictions(predictions: dict[str, str | Path], data: str | Path, split: str = "auto",
                      noise_level: str = "avg1", layout: str = "auto", baselines: str = "none",
                      tune_split: str = "auto", tune_images: int = 3, tune_metric: str = "si_psnr",
                      out_dir: str | Path | None = None, panels: int = 3, val_fovs: str = DEFAULTS.val_fovs,
                      test_fovs: str = DEFAULTS.test_fovs, cache_dir: str = "",
                      progress: bool = True) -> EvaluationResult:
    """Score saved outputs of any method ({name: folder}) by file name, beside the noisy input (and baselines)."""
    if not predictions:
        raise UserError("nothing to score: give a model or at least one predictions folder")
    selected = select_data(data, split, noise_level, layout, val_fovs, test_fovs, cache_dir)
    methods = [noisy_method()]
    baseline_list, baseline_record, tuning = baseline_methods(baselines, selected, tune_split, tune_images,
                                                              tune_metric, progress=progress)
    methods += baseline_list
    for name, directory in predictions.items():
        methods.append(predictions_method(name, directory, selected.sources))
    extra: dict[str, Any] = {}
    if baseline_record:
        extra.update(baselines=baseline_record, baseline_tuning=tuning)
    return run_evaluation(selected, methods, out_dir, panels, progress, extra)


def parse_predictions(items: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """'NAME=DIR' or plain 'DIR' (named after the folder) -> {name: folder}."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep:
            name, directory = Path(item).name or item, item
        name, directory = name.strip(), directory.strip()
        if not name or not directory:
            raise UserError(f"--predictions {item!r}: expected NAME=DIR or DIR")
        if name in out or name in (NOISY, MODEL, MODEL_TTA):
            raise UserError(f"--predictions {item!r}: the name '{name}' is already taken")
        out[name] = Path(directory)
    return out


def default_out_dir(label: str, split: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-") or "evaluation"
    return Path("outputs") / "evaluation" / f"{stamp}-{safe}-{split}"


def _same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def _resolve(uri: str) -> str:
    from training.tracking import resolve_tracking_uri

    return resolve_tracking_uri(uri)


__all__ = ["EvaluationData", "EvaluationResult", "Method", "baseline_methods", "default_out_dir", "evaluate_model",
           "held_out_split", "model_method", "noisy_method", "parse_predictions", "predictions_method",
           "run_evaluation", "score_predictions", "select_data"]
