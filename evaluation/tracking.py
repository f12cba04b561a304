"""Put an evaluation on the training run it belongs to, so MLflow's compare view lines runs up side by side.

One scheme for every run: the model's held-out scores as `test_psnr`, `test_si_psnr`, `test_ssim`,
`test_ms_ssim` (and the noisy input's as `test_noisy_*`), tags `eval.split`, `eval.noise_level`,
`eval.n_images`, `eval.data`, and the report files under the artifact folder `evaluation/<split>/`.
"test" means the run's held-out split: its data's test FOVs when it has any, else its validation FOVs
(the W2S 8-bit release in ../shared/data has no test FOVs); `eval.split` says which.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from evaluation.metrics import METRICS
from training.errors import first_line
from training.tracking import resolve_tracking_uri

METRIC_PREFIX = "test_"


def tracking_uri_for(checkpoint: dict[str, Any], explicit: str = "") -> str:
    """--tracking-uri, else the one the run was trained with, else $MLFLOW_TRACKING_URI / sqlite:///mlflow.db."""
    return explicit or (checkpoint.get("config") or {}).get("tracking_uri") or resolve_tracking_uri("")


def log_to_training_run(run_id: str, tracking_uri: str, summary: dict[str, Any], model_method: str,
                        out_dir: str | Path | None) -> str:
    """Log metrics, tags and report files on an existing run without changing its status; returns a message."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        return f"not logged to MLflow: run {run_id} not found in {tracking_uri} (pass --tracking-uri)"
    stamp = int(time.time() * 1000)
    metrics = []
    for method, prefix in ((model_method, METRIC_PREFIX), ("noisy input", METRIC_PREFIX + "noisy_")):
        means = summary["methods"].get(method, {}).get("mean", {})
        metrics += [Metric(prefix + m, float(means[m]), stamp, 0) for m in METRICS
                    if m in means and math.isfinite(means[m])]
    data = summary["data"]
    tags = [RunTag("eval.split", data["split"]), RunTag("eval.noise_level", data["noise_level"]),
            RunTag("eval.n_images", str(summary["n_images_scored"])), RunTag("eval.data", str(data["root"]))]
    try:
        client.log_batch(run_id, metrics=metrics, tags=tags)
        if out_dir is not None:
            client.log_artifacts(run_id, str(out_dir), artifact_path=f"evaluation/{data['split']}")
    except (MlflowException, OSError) as exc:
        return f"not logged to MLflow: {first_line(exc)}"
    return f"logged {', '.join(METRIC_PREFIX + m for m in METRICS)} and evaluation/{data['split']}/ to MLflow run {run_id} ({tracking_uri})"


def list_runs(experiment: str, tracking_uri: str = "", sort: str = "test_psnr", ascending: bool = False,
              max_results: int = 50, columns: tuple[str, ...] = ()):
    """The runs of an experiment as a pandas DataFrame, best first by `sort` (runs without it last)."""
    import mlflow

    from training.errors import UserError
    from training.predict import mlflow_uri

    key = sort if sort.startswith(("metrics.", "params.", "tags.", "attributes.")) else f"metrics.{sort}"
    with mlflow_uri(tracking_uri) as uri:
        if mlflow.get_experiment_by_name(experiment) is None:
            raise UserError(f"experiment '{experiment}' not found in {uri}")
        try:
            runs = mlflow.search_runs(experiment_names=[experiment], max_results=max(1, max_results),
                                      order_by=[f"{key} {'ASC' if ascending else 'DESC'}", "attributes.start_time DESC"])
        except mlflow.exceptions.MlflowException as exc:
            raise UserError(f"cannot list runs sorted by '{sort}': {str(exc).strip().splitlines()[0]}") from None
    if not runs.empty and key not in runs.columns:
        raise UserError(f"no run in '{experiment}' has '{sort}' (metrics: "
                        f"{', '.join(sorted(c[8:] for c in runs.columns if c.startswith('metrics.')))})")
    if not runs.empty:  # runs without the metric go last whichever the direction
        runs = runs.sort_values(key, ascending=ascending, na_position="last", kind="stable")
    return runs, uri


__all__ = ["METRIC_PREFIX", "list_runs", "log_to_training_run", "tracking_uri_for"]
