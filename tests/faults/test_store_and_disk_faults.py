"""Faults around a training process: its MLflow server dies, a second training shares its SQLite store, its
disk fills up. Real processes, a real `mlflow server`, a real (tmpfs) filesystem; 3 epochs x 4 steps each."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import W2S_BIN
from fault_procs import (EPOCHS, PER_EPOCH, latest_run_dir, load, metric_steps, mlflow_server, run, spawn,
                         tiny_dataset, train_args)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("fault_data") / "data")


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# ----------------------------------------------------------------------------------------- tracking server


def test_tracking_server_stops_mid_run(tmp_path, data):
    """What happened: the `mlflow server` the run logs to stops after epoch 1 and comes back after training.
    What the user sees: one warning (not one per step or epoch); training finishes with exit 0; later
    `w2s train --resume RUN` (server back) reports the epochs it logged.
    What is preserved: every checkpoint (epochs 2 and 3 written while the server was down), every epoch's
    metrics (in last.pt, then in the run), the same MLflow run, finally FINISHED."""
    with mlflow_server(tmp_path, tag="server-first") as (url, port):
        child = spawn(train_args(tmp_path, data, url), tmp_path, "offline", pause="epoch_end@1")
        marker = child.wait_paused("epoch_end@1")
        run_dir = latest_run_dir(tmp_path)
        run_id = (run_dir / "mlflow_run_id").read_text()
    marker.unlink()  # the server is down now
    assert child.finish() == 0, child.output
    warnings = [line for line in child.stderr.splitlines() if "MLflow tracking failed" in line]
    print(f"warnings while the server was down: {len(warnings)}: {warnings}")
    assert len(warnings) == 1 and f"w2s train --resume {run_dir}" in warnings[0], child.output
    assert "Traceback" not in child.stderr
    assert [f"epoch {e}/{EPOCHS}" in child.stdout for e in (2, 3)] == [True, True]
    state = load(run_dir / "last.pt")
    assert state["epoch"] == EPOCHS and load(run_dir / "best.pt")["format"] == "w2s-checkpoint/1"

    with mlflow_server(tmp_path, port=port, tag="server-again") as (url, _):
        client = client_for(url)
        assert client.get_run(run_id).info.status == "RUNNING"
        assert metric_steps(client, run_id, "val_psnr") == [1]
        synced = run(["train", "--resume", str(run_dir), "--quiet"], tmp_path, "sync")
        assert f"logged {EPOCHS - 1} epoch(s) missing from MLflow run {run_id}" in synced.stdout, synced.output
        run_info = client.get_run(run_id)
        assert run_info.info.status == "FINISHED"
        for key in PER_EPOCH:
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            assert [(m.step, m.value) for m in history] == [(h["epoch"], h[key]) for h in state["history"]], key
        assert run_info.data.metrics["best_val_psnr"] == load(run_dir / "best.pt")["best_metrics"]["val_psnr"]
        assert "checkpoints" in {a.path for a in client.list_artifacts(run_id)}


# ------------------------------------------------------------------------------------------- shared SQLite


def test_two_trainings_share_the_default_sqlite_store(tmp_path, data):
    """What happened: two `w2s train` started at the same moment in one folder, both on the default
    `sqlite:///mlflow.db`, which neither had created yet (both race to create the schema and experiment).
    What the user sees: two normal runs, exit 0 each. What is preserved: two run folders, two FINISHED runs
    with every epoch logged once, and a store that passes SQLite's integrity check."""
    children = [spawn(train_args(tmp_path, data, None), tmp_path, name) for name in ("first", "second")]
    codes = [child.finish() for child in children]
    assert codes == [0, 0], "\n".join(child.output for child in children)
    run_dirs = {Path(line.split(":", 1)[1].strip()).parent for child in children
                for line in child.stdout.splitlines() if line.startswith("best checkpoint:")}
    assert len(run_dirs) == 2 and all(load(d / "last.pt")["epoch"] == EPOCHS for d in run_dirs)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    client = client_for(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("w2s-denoising").experiment_id])
    assert {r.info.run_id for r in runs} == {(d / "mlflow_run_id").read_text() for d in run_dirs}
    for r in runs:
        assert r.info.status == "FINISHED"
        for key in PER_EPOCH:
            assert metric_steps(client, r.info.run_id, key) == list(range(1, EPOCHS + 1)), key


# ----------------------------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs mounted for the test (needs root or CAP_SYS_ADMIN); None where mounting is refused,
    and the test then uses a file-size limit (RLIMIT_FSIZE: writes fail with EFBIG) instead."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True) if shutil.which("mount") else None
    if done is None or done.returncode != 0:
        yield mount_point, False
        return
    try:
        yield mount_point, True
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> int:
    """Write a filler file until the filesystem says ENOSPC (big chunks, then smaller); returns bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    written += handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return written


def test_disk_full_while_writing_a_checkpoint_or_an_output(tmp_path, data, small_disk):
    """What happened: the disk holding the run folder fills up after epoch 1, so epoch 2's checkpoint cannot
    be written; then `w2s predict` writes its output onto the same full disk.
    What the user sees: one line, `w2s: error: <file>: cannot write (No space left on device) ...`, exit 2.
    What is preserved: epoch 1's last.pt, byte for byte; no temporary file or partial TIFF is left; the
    MLflow run is FAILED; once space is freed, `--resume` finishes the run."""
    mount_point, is_tmpfs = small_disk
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # the tracking store is on another disk
    args = train_args(tmp_path, data, uri)
    args[args.index("--out-dir") + 1] = str(mount_point / "runs")
    child = spawn(args, tmp_path, "full", pause="epoch_end@1")
    marker = child.wait_paused("epoch_end@1")
    run_dir = latest_run_dir(mount_point)
    before = (run_dir / "last.pt").read_bytes()
    if is_tmpfs:
        print(f"tmpfs filled with {fill(mount_point)} bytes")
    else:  # no mount permission: cap the paused process's file size below a checkpoint's, above its logs'
        limit = (run_dir / "best.pt").stat().st_size // 2
        assert limit > len(child.stderr) + 8192, "checkpoints too small for the file-size-limit fallback"
        resource.prlimit(child.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    marker.unlink()
    assert child.finish() == 2, child.output
    reason = "No space left on device" if is_tmpfs else "File too large"
    errors = [line for line in child.stderr.splitlines() if line.startswith("w2s: error:")]
    assert len(errors) == 1 and f".pt: cannot write ({reason})" in errors[0], child.output
    if is_tmpfs:  # with RLIMIT_FSIZE the SQLite store fails too, and MLflow logs its own traceback for that
        assert "Traceback" not in child.stderr
    assert (run_dir / "last.pt").read_bytes() == before and load(run_dir / "last.pt")["epoch"] == 1
    assert not list(run_dir.glob(".*.tmp"))
    if is_tmpfs:  # with RLIMIT_FSIZE the SQLite store cannot be written either
        assert client_for(uri).get_run((run_dir / "mlflow_run_id").read_text()).info.status == "FAILED"

    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((40, 48), dtype=np.float32))
    limit = None if is_tmpfs else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY)))
    predicted = subprocess.run([str(W2S_BIN), "predict", str(image), "--model", str(run_dir), "--out",
                                str(mount_point / "denoised"), "--device", "cpu", "--quiet"],
                               capture_output=True, text=True, cwd=tmp_path, preexec_fn=limit,
                               env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert predicted.returncode == 2, predicted.stderr
    assert predicted.stderr.startswith("w2s: error:") and len(predicted.stderr.strip().splitlines()) == 1
    assert "cells.tif: cannot write (" in predicted.stderr  # numpy reports a short write, with no errno
    assert not list((mount_point / "denoised").iterdir())

    (mount_point / "filler").unlink(missing_ok=True)
    run(["train", "--resume", str(run_dir), "--quiet"], tmp_path, "after")
    assert load(run_dir / "last.pt")["epoch"] == EPOCHS
