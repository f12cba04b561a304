"""Real `w2s train` processes for fault tests: spawn, pause at a named point, signal, resume, compare.

A child started with `pause="NAME@N"` stops at that point (training.resilience.fault_point) and creates a
marker file; the test then kills it, signals it, fills its disk or stops its tracking server, and deletes
the marker to let it go on. Every child runs on one CPU thread so that runs are bit-for-bit repeatable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from conftest import MLFLOW_BIN, W2S_BIN, free_port, write_8bit

EPOCHS, STEPS = 3, 4  # the fault points below are in epoch 2: steps 5..8 overall, the second validation
PER_EPOCH = ("train_loss", "val_loss", "val_psnr", "val_si_psnr", "val_ssim", "lr")
START_TIMEOUT = 180  # seconds for a child to reach its pause point on a loaded 2-core machine


def tiny_dataset(root: Path) -> Path:
    """Four FOVs of 2 channels, 40x48 px; FOV 071 (2 images) validates."""
    return write_8bit(root, fovs={"train": (1, 2, 3, 71)}, shape=(40, 48))


def train_args(tmp: Path, data: Path, tracking_uri: str | None, *extra: str) -> list[str]:
    args = ["train", "--data", str(data), "--val-fovs", "071", "--epochs", str(EPOCHS), "--steps-per-epoch",
            str(STEPS), "--batch-size", "2", "--patch-size", "16", "--base-channels", "4", "--depth", "2",
            "--seed", "7", "--lr", "0.003", "--set", "warmup_steps=2", "--set", "panel_every=2", "--threads", "1",
            "--no-log-model", "--device", "cpu", "--quiet", "--out-dir", str(tmp / "runs")]
    return args + (["--tracking-uri", tracking_uri] if tracking_uri else []) + list(extra)


@dataclass
class Child:
    """One `w2s` process with its output in files (pipes could fill up and block a paused child)."""

    proc: subprocess.Popen
    marker_dir: Path
    log_dir: Path
    name: str

    def wait_paused(self, point: str, timeout: float = START_TIMEOUT) -> Path:
        marker = self.marker_dir / point
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode} before {point}:\n{self.output}"
            assert time.monotonic() < deadline, f"{self.name} did not reach {point} in {timeout} s:\n{self.output}"
            time.sleep(0.05)
        return marker

    def finish(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.output}") from None

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    @property
    def stdout(self) -> str:
        return (self.log_dir / f"{self.name}.out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.log_dir / f"{self.name}.err").read_text(errors="replace")

    @property
    def output(self) -> str:
        return f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def spawn(args: list[str], cwd: Path, name: str, pause: str = "") -> Child:
    """Start `w2s ARGS` in `cwd`; with `pause`, it stops at that fault point (see training.resilience)."""
    marker_dir = cwd / "markers"
    marker_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "W2S_FAULT_DIR": str(marker_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("W2S_FAULT_PAUSE", None)
    if pause:
        env["W2S_FAULT_PAUSE"] = pause
    with open(cwd / f"{name}.out", "wb") as out, open(cwd / f"{name}.err", "wb") as err:
        proc = subprocess.Popen([str(W2S_BIN), *args], cwd=cwd, env=env, stdout=out, stderr=err)
    return Child(proc, marker_dir, cwd, name)


def run(args: list[str], cwd: Path, name: str) -> Child:
    """Run to the end and demand success."""
    child = spawn(args, cwd, name)
    code = child.finish()
    assert code == 0, f"{name} exited {code}:\n{child.output}"
    return child


def run_dir_of(child: Child) -> Path:
    line = next(line for line in child.stdout.splitlines() if line.startswith("best checkpoint:"))
    return Path(line.split(":", 1)[1].strip()).parent


def latest_run_dir(cwd: Path) -> Path:
    return Path((cwd / "runs" / "latest").read_text())


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def weight_difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two checkpoints' weights (0.0 = bit-identical)."""
    assert a["model_state"].keys() == b["model_state"].keys()
    return max(float((a["model_state"][k].double() - b["model_state"][k].double()).abs().max())
               for k in a["model_state"])


def histories_equal(a: dict, b: dict) -> bool:
    """Same epochs and the same per-epoch scores (throughput excluded: it is a wall-clock measurement)."""
    return [(h["epoch"], *(h[k] for k in PER_EPOCH)) for h in a["history"]] == \
           [(h["epoch"], *(h[k] for k in PER_EPOCH)) for h in b["history"]]


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
        time.sleep(0.3)


@contextlib.contextmanager
def mlflow_server(workdir: Path, port: int | None = None, tag: str = "server") -> Iterator[tuple[str, int]]:
    """A real `mlflow server` on 127.0.0.1 with its store under `workdir`; stopped (SIGTERM) on exit."""
    port = port or free_port()
    log = workdir / f"{tag}.log"
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            [str(MLFLOW_BIN), "server", "--backend-store-uri", f"sqlite:///{workdir}/server.db", "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1", "--artifacts-destination",
             str(workdir / "server-artifacts")],
            cwd=workdir, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}", port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
