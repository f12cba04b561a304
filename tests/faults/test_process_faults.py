"""Real `w2s train` processes hit by real faults: kill -9, SIGINT/SIGTERM, a dying tracking server, two
writers on one SQLite store, a full disk.

Every run is 3 epochs x 4 steps on 40x48 px images, one CPU thread, seed 7; the faults strike in epoch 2 at
exact points (training.resilience.fault_point). The uninterrupted reference run is the yardstick: resumed
runs must end bit-for-bit equal to it, because last.pt holds the optimizer, scheduler and both RNG states.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from fault_procs import (EPOCHS, PER_EPOCH, STEPS, histories_equal, latest_run_dir, load, metric_steps,
                         run, run_dir_of, spawn, tiny_dataset, train_args, weight_difference)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("fault_data") / "data")


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One SQLite store for the module's runs (creating a store costs seconds of schema migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data, uri) -> dict:
    """The uninterrupted run: its final last.pt."""
    cwd = tmp_path_factory.mktemp("reference")
    child = run(train_args(cwd, data, uri), cwd, "reference")
    return load(run_dir_of(child) / "last.pt")


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("w2s:")]) == 1, stderr


def assert_resumes_to_reference(cwd: Path, run_dir: Path, uri: str, reference: dict, run_id: str) -> float:
    """`w2s train --resume RUN` finishes the same run and the same MLflow run, equal to the reference."""
    resumed = run(["train", "--resume", str(run_dir), "--quiet"], cwd, "resume")
    assert run_dir_of(resumed) == run_dir
    assert f"MLflow run:      {run_id} " in resumed.stdout
    assert not list(run_dir.glob(".*.tmp")), "a stale temporary file survived the resume"
    final = load(run_dir / "last.pt")
    assert final["epoch"] == EPOCHS and final["partial"] is None
    difference = weight_difference(final, reference)
    print(f"resumed vs uninterrupted: max |weight difference| = {difference}")
    assert difference == 0.0
    assert histories_equal(final, reference)
    client = client_for(uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in PER_EPOCH:  # every epoch logged exactly once, with the values the checkpoint holds
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), key
        assert [m.value for m in history] == [h[key] for h in final["history"]], key
    return difference


# ------------------------------------------------------------------------------------------------- kill -9

KILL_POINTS = {
    "during an epoch": f"step@{STEPS + 2}",  # before the 2nd step of epoch 2
    "during validation": "validate@2",  # after the 1st of 2 validation images of epoch 2
    "while writing last.pt": "write:last.pt@2",  # half of epoch 2's last.pt is on disk
    "after the checkpoint, before MLflow": "checkpointed@2",  # epoch 2 is saved but not yet logged
}


@pytest.mark.parametrize("where", list(KILL_POINTS))
def test_kill_9_then_resume_ends_equal_to_an_uninterrupted_run(where, tmp_path, data, uri, reference):
    """What happened: SIGKILL in epoch 2 (mid-epoch, mid-validation, mid-way through writing last.pt, or
    after writing it but before logging the epoch to MLflow).
    What the user sees: the process dies (no message is possible); `w2s train --resume RUN` continues.
    What is preserved: the last complete last.pt (a torn temporary file is ignored, then removed), the
    MLflow run (same id, each epoch logged once: an epoch saved but not logged is logged on resume), and the
    result: bit-identical to the uninterrupted run. At most the epoch in progress is lost."""
    child = spawn(train_args(tmp_path, data, uri), tmp_path, "killed", pause=KILL_POINTS[where])
    child.wait_paused(KILL_POINTS[where])
    child.signal(signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL
    run_dir = latest_run_dir(tmp_path)
    before = load(run_dir / "last.pt")
    saved = 2 if where == "after the checkpoint, before MLflow" else 1
    assert before["epoch"] == saved and before["partial"] is None  # the last complete checkpoint
    torn = list(run_dir.glob(".last.pt.*.tmp"))
    if where == "while writing last.pt":
        assert len(torn) == 1 and 0 < torn[0].stat().st_size < (run_dir / "last.pt").stat().st_size
        with pytest.raises(Exception):
            load(torn[0])
    run_id = (run_dir / "mlflow_run_id").read_text()
    client = client_for(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could tell MLflow
    assert metric_steps(client, run_id, "val_psnr") == [1]
    assert_resumes_to_reference(tmp_path, run_dir, uri, reference, run_id)
    if saved == 2:
        assert f"logged 1 epoch(s) missing from MLflow run {run_id}" in (tmp_path / "resume.out").read_text()


def test_kill_9_at_a_random_moment_then_resume(tmp_path, data, uri, reference):
    """What happened: SIGKILL at a random moment after epoch 1's checkpoint (seed printed; W2S_FAULT_SEED
    repeats it). What the user sees and what is preserved: as above, wherever the kill landed."""
    seed = int(os.environ.get("W2S_FAULT_SEED", time.time_ns() % 2**31))
    delay = random.Random(seed).uniform(0.0, 1.5)  # an epoch here takes a fraction of a second
    child = spawn(train_args(tmp_path, data, uri), tmp_path, "random")
    deadline = time.monotonic() + 180
    while not (tmp_path / "runs" / "latest").exists() or not (latest_run_dir(tmp_path) / "last.pt").exists():
        assert child.proc.poll() is None and time.monotonic() < deadline, child.output
        time.sleep(0.01)
    time.sleep(delay)
    child.signal(signal.SIGKILL)
    code = child.finish()
    run_dir = latest_run_dir(tmp_path)
    torn = [p.name for p in run_dir.glob(".*.tmp")]
    print(f"seed {seed}: killed {delay:.2f} s after epoch 1's last.pt; exit {code}; last.pt epoch "
          f"{load(run_dir / 'last.pt')['epoch']}; temporary files left {torn}")
    assert code in (-signal.SIGKILL, 0)
    assert_resumes_to_reference(tmp_path, run_dir, uri, reference, (run_dir / "mlflow_run_id").read_text())


# ----------------------------------------------------------------------------------------- SIGINT / SIGTERM


@pytest.mark.parametrize("signum, point, steps_done", [
    (signal.SIGINT, f"step@{STEPS + 2}", 1),
    (signal.SIGTERM, "validate@2", STEPS),
])
def test_signal_writes_a_checkpoint_marks_the_run_killed_and_resumes_exactly(signum, point, steps_done, tmp_path,
                                                                              data, uri, reference):
    """What happened: Ctrl-C (SIGINT) in the middle of epoch 2, or SIGTERM (e.g. `kill`, a scheduler) during
    its validation. What the user sees: one line saying where it stopped, the checkpoint and the resume
    command; exit code 130 (SIGINT) or 143 (SIGTERM). What is preserved: last.pt holds the state after the
    last whole step (mid-epoch included), the MLflow run is KILLED, and resuming finishes it (FINISHED)
    bit-identical to the uninterrupted run."""
    child = spawn(train_args(tmp_path, data, uri), tmp_path, "signalled", pause=point)
    child.wait_paused(point)
    child.signal(signum)
    assert child.finish() == 128 + signum, child.output
    run_dir = latest_run_dir(tmp_path)
    name = signal.Signals(signum).name
    assert f"w2s: {name}: stopped" in child.stderr and f"w2s train --resume {run_dir}" in child.stderr
    assert "Traceback" not in child.stderr
    state = load(run_dir / "last.pt")
    assert state["epoch"] == 1 and len(state["partial"]["losses"]) == steps_done
    run_id = (run_dir / "mlflow_run_id").read_text()
    assert client_for(uri).get_run(run_id).info.status == "KILLED"
    assert_resumes_to_reference(tmp_path, run_dir, uri, reference, run_id)


def test_a_second_ctrl_c_exits_at_once(tmp_path, data, uri):
    """What happened: Ctrl-C, then Ctrl-C again while the stop checkpoint is being prepared.
    What the user sees: "SIGINT again: exiting at once" and exit code 130 within moments.
    What is preserved: last.pt of epoch 1, untouched (the interrupted state is simply not saved)."""
    first = f"step@{STEPS + 2}"
    child = spawn(train_args(tmp_path, data, uri), tmp_path, "twice", pause=f"{first},stop_checkpoint@1")
    child.wait_paused(first)
    run_dir = latest_run_dir(tmp_path)
    before = (run_dir / "last.pt").read_bytes()
    child.signal(signal.SIGINT)
    child.wait_paused("stop_checkpoint@1")
    sent = time.monotonic()
    child.signal(signal.SIGINT)
    code = child.finish(timeout=30)
    seconds = time.monotonic() - sent
    print(f"second Ctrl-C: exit {code} after {seconds:.3f} s")
    assert code == 130 and "SIGINT again: exiting at once" in child.stderr, child.output
    assert (run_dir / "last.pt").read_bytes() == before and load(run_dir / "last.pt")["epoch"] == 1
