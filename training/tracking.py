"""MLflow: where runs go, and starting or continuing one."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str = "") -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else a SQLite store in the working directory.

    A relative SQLite path is made absolute, so a resumed run finds its store from any directory.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def start_run(tracking_uri: str, experiment: str, run_name: str, run_id: str | None = None) -> mlflow.ActiveRun:
    """Start a new run, or continue `run_id` (resumed training logs into the same run)."""
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    if run_id:
        return mlflow.start_run(run_id=run_id)
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=run_name or None)
