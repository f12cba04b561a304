"""Does combining outputs help? The mean of several models' saved outputs, and blends with a peer method.

`python -m benchmarks.combinations --data ROOT [--split val] -m NAME=DIR -m NAME=DIR [--peer NAME=DIR]
[--weights 0.1,0.2,0.3,0.5]` reads each method's saved outputs the way `w2s evaluate -p` does (one file per
target, matched by name; `w2s evaluate --save-predictions` writes a model's), fits each to the first member by
least squares (scale and offset: tools leave their outputs in different intensity frames), and scores by
SI-PSNR, per image, every member, the members' mean, and the mean blended with the peer at each weight.
Averaging only helps where the members' errors differ; this measures whether they do (docs/performance.md).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.common import report_path, save_report
from evaluation.evaluate import SPLITS, EvaluationData, parse_predictions, predictions_method, select_data
from training.data.layouts import load_pairs
from training.data.normalization import input_frame_fit
from training.errors import UserError
from training.metrics import scale_invariant_psnr

MEAN = "mean of members"


def affine_fit(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`a * source + b` with a, b minimizing the squared difference to `reference`."""
    scale, offset = input_frame_fit(reference, source)
    return scale * np.asarray(source, np.float64) + offset


def blend_name(peer: str, weight: float) -> str:
    return f"{1 - weight:g} x mean + {weight:g} x {peer}"


def combination_scores(data: EvaluationData, members: dict[str, Path], peer: tuple[str, Path] | None = None,
                       weights: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5), progress: bool = True) -> dict[str, Any]:
    """Per-image and mean SI-PSNR of each member, their mean, and the mean blended with `peer`."""
    if not members:
        raise UserError("give at least one member (-m NAME=DIR)")
    bad = [w for w in weights if not 0 < w < 1]
    if bad:
        raise UserError(f"--weights: {bad[0]:g} is not between 0 and 1 (exclusive)")
    readers = {name: predictions_method(name, folder, data.sources, data.scale) for name, folder in members.items()}
    peer_reader = predictions_method(peer[0], peer[1], data.sources, data.scale) if peer else None
    rows = []
    for source in tqdm(data.sources, desc=f"scoring {data.split_name} images", unit="image", disable=not progress,
                       dynamic_ncols=True):
        pair = load_pairs([source], scale=data.scale)[0]
        noisy, clean = np.asarray(pair.noisy, np.float32), np.asarray(pair.clean, np.float64)
        outputs = [reader.predict(source, noisy) for reader in readers.values()]
        reference = np.asarray(outputs[0], np.float64)
        mean = np.mean([affine_fit(output, reference) for output in outputs], axis=0)
        row = {name: scale_invariant_psnr(clean, output) for name, output in zip(readers, outputs)}
        row[MEAN] = scale_invariant_psnr(clean, mean)
        if peer_reader is not None:
            fitted = affine_fit(peer_reader.predict(source, noisy), mean)
            row[peer[0]] = scale_invariant_psnr(clean, fitted)
            for weight in weights:
                row[blend_name(peer[0], weight)] = scale_invariant_psnr(clean, (1 - weight) * mean + weight * fitted)
        rows.append({"image": source.name, **row})
    methods = [key for key in rows[0] if key != "image"]
    return {"split": data.split_name, "images": len(rows), "members": {k: str(v) for k, v in members.items()},
            "peer": {peer[0]: str(peer[1])} if peer else {},
            "mean_si_psnr": {m: float(np.mean([row[m] for row in rows])) for m in methods}, "per_image": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.combinations", description=__doc__)
    parser.add_argument("--data", required=True, help="dataset root (any layout `w2s evaluate` reads)")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--layout", default="auto")
    parser.add_argument("--noise-level", default="avg1")
    parser.add_argument("-m", "--member", action="append", default=[], metavar="NAME=DIR",
                        help="a model's saved outputs (repeatable)")
    parser.add_argument("--peer", metavar="NAME=DIR", help="another method's outputs to blend the mean with")
    parser.add_argument("--weights", default="0.1,0.2,0.3,0.5", help="the peer's weights in the blends")
    parser.add_argument("--out", default="", help="JSON report [default: runs/bench/combinations-<time>.json]")
    args = parser.parse_args(argv)
    started = datetime.now().isoformat(timespec="seconds")
    try:
        members = parse_predictions(args.member)
        peer = next(iter(parse_predictions([args.peer]).items())) if args.peer else None
        try:
            weights = tuple(float(w) for w in args.weights.split(",") if w.strip())
        except ValueError:
            raise UserError(f"--weights {args.weights!r}: expected numbers separated by commas") from None
        data = select_data(args.data, args.split, args.noise_level, args.layout)
        report = combination_scores(data, members, peer, weights)
    except UserError as exc:
        print(f"python -m benchmarks.combinations: {exc}", file=sys.stderr)
        return 2
    report["started"] = started
    print(f"{'method':<40} SI-PSNR (dB), mean of {report['images']} {report['split']} images")
    for method, value in report["mean_si_psnr"].items():
        print(f"{method:<40} {value:8.3f}")
    save_report(report, report_path(args.out, "combinations"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
