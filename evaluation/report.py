"""Evaluation outputs: per-image CSV, summary JSON, a Markdown table, and before/after panels.

Every file is written atomically (training.io), and only after every image has been scored, so a failed or
interrupted evaluation never leaves a table that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import METRIC_LABELS, METRICS
from training.io import atomic_path, write_text
from training.visualize import display_range, to_uint8

CSV_NAME = "per_image.csv"
SUMMARY_NAME = "summary.json"
TABLE_NAME = "report.md"
PANEL_DIR = "panels"


def summarize(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation of every metric per method, with the number of images scored."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"n_images": len(mine), "mean": {}, "std": {}}
        for metric in METRICS:
            values = np.array([r[metric] for r in mine], dtype=np.float64)
            finite = values[np.isfinite(values)]
            entry["mean"][metric] = float(finite.mean()) if finite.size else math.nan
            entry["std"][metric] = float(finite.std()) if finite.size else math.nan
        out[method] = entry
    return out


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image", "method", *METRICS], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"image": row["image"], "method": row["method"],
                         **{m: _fmt_csv(row[m]) for m in METRICS}})
    return buffer.getvalue()


def markdown_table(summary: dict[str, Any]) -> str:
    """The report: a header naming data, split and the count of scored images, the table, and the details."""
    data = summary["data"]
    lines = [
        f"## Evaluation: {data['root']}",
        "",
        f"Split `{data['split']}` ({data['layout']} layout, input noise level {data['noise_level']}): "
        f"**{summary['n_images_scored']} of {data['n_images']} images scored**.",
        "",
        "| method | images | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for name, entry in summary["methods"].items():
        cells = [_fmt_metric(m, entry["mean"][m]) for m in METRICS]
        lines.append(f"| {name} | {entry['n_images']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Means over images. PSNR and SSIM use the target's range (max - min); SI-PSNR fits the "
                 "prediction to the target (least-squares scale and offset) first; MS-SSIM is torchmetrics'.")
    if summary.get("model"):
        model = summary["model"]
        lines.append(f"Model: `{model['source']}`" + (f" (MLflow run {model['mlflow_run_id']})" if model.get("mlflow_run_id") else "")
                     + f", tiles {model['tile']} px, overlap {model['overlap']} px.")
    for name, entry in summary["methods"].items():
        if entry.get("directory"):
            lines.append(f"{name}: saved outputs from `{entry['directory']}`.")
    tuning = summary.get("baseline_tuning")
    if tuning:
        params = "; ".join(f"{b['label']} {b['param']}={b['value']:g}" for b in summary["baselines"].values())
        lines.append(f"Baselines tuned on {len(tuning['images'])} `{tuning['split']}` images (never the reported "
                     f"ones; {tuning['crop']}x{tuning['crop']} center crops, by {METRIC_LABELS[tuning['metric']]}): "
                     f"{params}.")
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str | Path, rows: list[dict[str, Any]], summary: dict[str, Any], table: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"csv": out_dir / CSV_NAME, "summary": out_dir / SUMMARY_NAME, "table": out_dir / TABLE_NAME}
    write_text(paths["csv"], csv_text(rows))
    write_text(paths["summary"], json.dumps(_json_safe(summary), indent=2) + "\n")
    write_text(paths["table"], table)
    return paths


def write_panel(path: str | Path, name: str, noisy: np.ndarray, predictions: dict[str, np.ndarray],
                target: np.ndarray, scores: dict[str, dict[str, float]]) -> None:
    """noisy | each method | target, all shown with the target's display range, titled with PSNR / SI-PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    value_range = display_range(target)
    images = [("noisy input", noisy), *predictions.items(), ("target", target)]
    columns = len(images)
    fig, axes = plt.subplots(1, columns, figsize=(2.6 * columns, 2.9), squeeze=False)
    for ax, (label, image) in zip(axes[0], images):
        ax.imshow(to_uint8(image, value_range), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        score = scores.get(label)
        title = label if score is None else f"{label}\n{score['psnr']:.2f} / {score['si_psnr']:.2f} dB"
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{name}   (PSNR / SI-PSNR; display range {value_range[0]:.4g}..{value_range[1]:.4g})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def panel_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".png"


def _fmt_metric(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if metric in ("ssim", "ms_ssim") else f"{value:.2f}"


def _fmt_csv(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6f}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = ["CSV_NAME", "PANEL_DIR", "SUMMARY_NAME", "TABLE_NAME", "csv_text", "markdown_table", "panel_filename",
           "summarize", "write_panel", "write_reports"]
