"""How well does the fitted noise model (`synthetic_noise`) reproduce the real noise?

`python -m benchmarks.noise_model --data ROOT [--split train|val|test] [--max-images N]` fits
`training.data.noise_model` to each pair, then at three intensity levels of each target (the 25th, 50th and
90th percentile of its distinct values) compares the real noisy frame's residual (about the fitted mean)
with draws from the model and with Poisson draws of the same mean and variance: variance ratio to the real
one, and skewness; and the residual's correlation with its neighbours (the model draws white noise). Shot noise alone fixes the variance; the skew says which distribution it has (an
EMCCD's gain register makes it ~1.5x Poisson's). Medians over images are printed and saved as JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime
from typing import Any

import numpy as np
from scipy import stats
from tqdm import tqdm

from benchmarks.common import report_path, save_report
from training.config import TrainConfig
from training.data.layouts import discover_pairs, load_pairs
from training.data.noise_model import NoiseModel, fit_noise_model
from training.data.split import split_by_fov
from training.errors import UserError

LEVELS = (25, 50, 90)
MIN_PIXELS = 500


def poisson_draw(model: NoiseModel, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scaled Poisson noise with the model's mean and variance (gain * (mean - zero)), rounded and clipped
    like the model's draws, for comparison."""
    mean = model.slope * clean + model.intercept
    noisy = model.zero + model.gain * rng.poisson(np.clip((mean - model.zero) / model.gain, 0, None))
    return np.clip(np.round(noisy) if model.integer else noisy, model.low, model.high)


def neighbour_correlation(noisy: np.ndarray, clean: np.ndarray, model: NoiseModel) -> float:
    """The larger of the residual's correlations with its right and its lower neighbour: ~0 for white noise,
    which the model draws pixel by pixel."""
    residual = np.asarray(noisy, np.float64) - (model.slope * np.asarray(clean, np.float64) + model.intercept)
    right = np.corrcoef(residual[:, :-1].ravel(), residual[:, 1:].ravel())[0, 1]
    below = np.corrcoef(residual[:-1].ravel(), residual[1:].ravel())[0, 1]
    return float(max(abs(right), abs(below)))


def compare(noisy: np.ndarray, clean: np.ndarray, model: NoiseModel, rng: np.random.Generator) -> list[dict]:
    noisy, clean = np.asarray(noisy, np.float64), np.asarray(clean, np.float64)
    mean = model.slope * clean + model.intercept
    drawn, poisson = model.sample(clean, rng).astype(np.float64), poisson_draw(model, clean, rng)
    values = np.unique(clean[clean < clean.max()])
    rows = []
    for level in LEVELS:
        at = clean == values[min(len(values) - 1, int(len(values) * level / 100))]
        if at.sum() < MIN_PIXELS:
            continue
        real = noisy[at] - mean[at]
        rows.append({"level": level, "photons": float(2 * (mean[at].mean() - model.zero) / model.gain),
                     "variance_ratio_model": float((drawn[at] - mean[at]).var() / real.var()),
                     "variance_ratio_poisson": float((poisson[at] - mean[at]).var() / real.var()),
                     "skew_real": float(stats.skew(real)), "skew_model": float(stats.skew(drawn[at] - mean[at])),
                     "skew_poisson": float(stats.skew(poisson[at] - mean[at]))})
    return rows


def noise_model_report(root: str, split: str, max_images: int, seed: int = 0) -> dict[str, Any]:
    defaults = TrainConfig()
    layout, found = discover_pairs(root, "auto", defaults.noise_level)
    if layout == "noisy":
        raise UserError(f"{root}: noisy images only, no targets to fit a noise model to")
    sources = getattr(split_by_fov(found, defaults.val_fovs, defaults.test_fovs), split)
    sources = sources[:max_images] if max_images else sources
    rng = np.random.default_rng(seed)
    rows, unfitted = [], []
    for source in tqdm(sources, desc="noise models", unit="image", leave=False, disable=None):
        pair = load_pairs([source])[0]
        model = fit_noise_model(pair.noisy, pair.clean)
        if model is None:
            unfitted.append(pair.name)
            continue
        correlation = neighbour_correlation(pair.noisy, pair.clean, model)
        rows += [{"image": pair.name, "gain": model.gain, "zero": model.zero,
                  "neighbour_correlation": correlation, **row} for row in compare(pair.noisy, pair.clean, model, rng)]
    if not rows:
        raise UserError(f"{root}: no {split} image gave a noise model to compare")
    summary = {}
    for level in LEVELS:
        at = [r for r in rows if r["level"] == level]
        summary[f"p{level}"] = {key: statistics.median(r[key] for r in at) for key in (
            "photons", "variance_ratio_model", "variance_ratio_poisson", "skew_real", "skew_model", "skew_poisson")}
        summary[f"p{level}"]["levels"] = len(at)
    correlations = {r["image"]: r["neighbour_correlation"] for r in rows}
    return {"data": str(root), "split": split, "images": len(sources), "unfitted": unfitted,
            "median_neighbour_correlation": statistics.median(correlations.values()),
            "max_neighbour_correlation": max(correlations.values()), "median_by_level": summary, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noise_model", description=__doc__)
    parser.add_argument("--data", required=True, help="dataset root (any layout `w2s evaluate` reads)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"),
                        help="the FOVs of training's split (val 071-080, test 081-120, train the rest)")
    parser.add_argument("--max-images", type=int, default=0, help="the first N images only (0 = all)")
    parser.add_argument("--out", default="", help="JSON report [default: runs/bench/noise_model-<time>.json]")
    args = parser.parse_args(argv)
    started = datetime.now().isoformat(timespec="seconds")
    try:
        report = noise_model_report(args.data, args.split, args.max_images)
    except UserError as exc:
        print(f"python -m benchmarks.noise_model: {exc}", file=sys.stderr)
        return 2
    report["started"] = started
    print(f"{len(report['rows'])} levels of {report['images']} {args.split} images "
          f"({len(report['unfitted'])} without a model); residual's neighbour correlation: median "
          f"{report['median_neighbour_correlation']:.4f}, max {report['max_neighbour_correlation']:.4f}; medians:")
    print(f"{'level':<6} {'photons':>8} {'var model/real':>15} {'var Poisson/real':>17} "
          f"{'skew real':>10} {'skew model':>11} {'skew Poisson':>13}")
    for level, m in report["median_by_level"].items():
        print(f"{level:<6} {m['photons']:8.1f} {m['variance_ratio_model']:15.3f} {m['variance_ratio_poisson']:17.3f} "
              f"{m['skew_real']:10.2f} {m['skew_model']:11.2f} {m['skew_poisson']:13.2f}")
    save_report(report, report_path(args.out, "noise_model"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
